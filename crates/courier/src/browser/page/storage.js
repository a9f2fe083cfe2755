// The WhatsApp Web origin's storage, moved through the page itself: a remote
// browser's disk is not the worker's, so the session (IndexedDB databases and
// localStorage, where WhatsApp Web keeps its keys and its own id) is exported
// by this script into JSON, and imported by it into an empty browser before
// the app starts. Run with execute-async:
//   arguments[0] = 'export', arguments[1] = the size limit in bytes
//     → {ok: dump} | {tooLarge: bytesCountedSoFar} | {err: message}
//   arguments[0] = 'import', arguments[1] = dump
//     → {ok: {databases, records, keys}} | {notEmpty: what} | {err: message}
// dump = {origin, localStorage: {key: value}, indexedDB: [{name, version,
//   stores: [{name, keyPath, autoIncrement, indexes: [{name, keyPath, unique,
//   multiEntry}], records: [[key, value]]}]}]}.
// Values are IndexedDB's structured-clone values: binary data, dates, maps,
// sets, blobs and the like are written as {"$c": type, …}; a plain object
// that has a "$c" key of its own is wrapped as {"$c": "o", v: {…}}.
var mode = arguments[0];
var param = arguments[1];
var done = arguments[arguments.length - 1];
var T = '$c';

function req(r) {
  return new Promise(function (resolve, reject) {
    r.onsuccess = function () { resolve(r.result); };
    r.onerror = function () { reject(r.error); };
  });
}
function txDone(tx) {
  return new Promise(function (resolve, reject) {
    tx.oncomplete = function () { resolve(); };
    tx.onerror = function () { reject(tx.error); };
    tx.onabort = function () { reject(tx.error || new Error('transaction aborted')); };
  });
}
function b64(bytes) {
  var s = '';
  for (var i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function unb64(s) {
  var bin = atob(s);
  var b = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) b[i] = bin.charCodeAt(i);
  return b;
}
var VIEWS = ['Int8Array', 'Uint8Array', 'Uint8ClampedArray', 'Int16Array', 'Uint16Array', 'Int32Array',
  'Uint32Array', 'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array', 'DataView'];

var size = 0, limit = Infinity;
function count(n) {
  size += n;
  if (size > limit) { var e = new Error('too large'); e.tooLarge = true; throw e; }
}

async function enc(v) {
  if (v === null || typeof v === 'boolean') { count(5); return v; }
  if (typeof v === 'string') { count(v.length + 2); return v; }
  if (typeof v === 'number') {
    count(24);
    if (Number.isNaN(v) || !Number.isFinite(v) || Object.is(v, -0)) return { $c: 'num', v: String(v) };
    return v;
  }
  if (v === undefined) { count(16); return { $c: 'undef' }; }
  if (typeof v === 'bigint') { count(32); return { $c: 'bigint', v: v.toString() }; }
  if (v instanceof Date) { count(40); return { $c: 'date', v: v.getTime() }; }
  if (v instanceof RegExp) { count(v.source.length + 40); return { $c: 're', v: v.source, f: v.flags }; }
  if (v instanceof ArrayBuffer) { count(v.byteLength * 4 / 3 + 24); return { $c: 'ab', v: b64(new Uint8Array(v)) }; }
  if (ArrayBuffer.isView(v)) {
    count(v.byteLength * 4 / 3 + 40);
    var type = v.constructor.name;
    if (VIEWS.indexOf(type) < 0) throw new Error('unsupported binary view ' + type);
    return { $c: 'view', t: type, v: b64(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
  }
  if (typeof Blob !== 'undefined' && v instanceof Blob) {
    count(v.size * 4 / 3 + 80);
    var bytes = new Uint8Array(await v.arrayBuffer());
    var out = { $c: 'blob', type: v.type, v: b64(bytes) };
    if (typeof File !== 'undefined' && v instanceof File) { out.$c = 'file'; out.name = v.name; out.lastModified = v.lastModified; }
    return out;
  }
  if (v instanceof Map) {
    var m = [];
    for (var [k, x] of v) m.push([await enc(k), await enc(x)]);
    return { $c: 'map', v: m };
  }
  if (v instanceof Set) {
    var st = [];
    for (var y of v) st.push(await enc(y));
    return { $c: 'set', v: st };
  }
  if (Array.isArray(v)) {
    var a = [];
    for (var i = 0; i < v.length; i++) a.push(await enc(v[i]));
    return a;
  }
  if (typeof v === 'object') {
    var o = {};
    var keys = Object.keys(v);
    for (var j = 0; j < keys.length; j++) { count(keys[j].length + 4); o[keys[j]] = await enc(v[keys[j]]); }
    return Object.prototype.hasOwnProperty.call(v, T) ? { $c: 'o', v: o } : o;
  }
  throw new Error('cannot export a value of type ' + typeof v);
}

function dec(v) {
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(dec);
  var c = v[T];
  if (c === undefined) {
    var o = {};
    Object.keys(v).forEach(function (k) { o[k] = dec(v[k]); });
    return o;
  }
  switch (c) {
    case 'o': var w = {}; Object.keys(v.v).forEach(function (k) { w[k] = dec(v.v[k]); }); return w;
    case 'num': return Number(v.v);
    case 'undef': return undefined;
    case 'bigint': return BigInt(v.v);
    case 'date': return new Date(v.v);
    case 're': return new RegExp(v.v, v.f);
    case 'ab': return unb64(v.v).buffer;
    case 'view':
      var b = unb64(v.v);
      if (v.t === 'DataView') return new DataView(b.buffer);
      if (VIEWS.indexOf(v.t) < 0) throw new Error('unsupported binary view ' + v.t);
      return new window[v.t](b.buffer);
    case 'blob': return new Blob([unb64(v.v)], { type: v.type });
    case 'file': return new File([unb64(v.v)], v.name, { type: v.type, lastModified: v.lastModified });
    case 'map': return new Map(v.v.map(function (p) { return [dec(p[0]), dec(p[1])]; }));
    case 'set': return new Set(v.v.map(dec));
  }
  throw new Error('unknown exported type ' + c);
}

function openDb(name, version, upgrade) {
  return new Promise(function (resolve, reject) {
    var r = version === undefined ? indexedDB.open(name) : indexedDB.open(name, version);
    r.onupgradeneeded = function () { if (upgrade) upgrade(r.result); };
    r.onsuccess = function () { resolve(r.result); };
    r.onerror = function () { reject(r.error); };
    r.onblocked = function () { reject(new Error('IndexedDB ' + name + ' is blocked by another connection')); };
  });
}

async function exportAll(max) {
  limit = max;
  var out = { origin: location.origin, localStorage: {}, indexedDB: [] };
  for (var i = 0; i < localStorage.length; i++) {
    var k = localStorage.key(i);
    var v = localStorage.getItem(k);
    count(k.length + v.length + 8);
    out.localStorage[k] = v;
  }
  var dbs = await indexedDB.databases();
  for (var d = 0; d < dbs.length; d++) {
    var db = await openDb(dbs[d].name);
    try {
      var entry = { name: db.name, version: db.version, stores: [] };
      var names = Array.prototype.slice.call(db.objectStoreNames);
      for (var s = 0; s < names.length; s++) {
        var tx = db.transaction(names[s], 'readonly');
        var os = tx.objectStore(names[s]);
        var keys = await req(os.getAllKeys());
        var values = await req(os.getAll());
        var store = {
          name: os.name, keyPath: os.keyPath, autoIncrement: os.autoIncrement,
          indexes: Array.prototype.map.call(os.indexNames, function (n) {
            var ix = os.index(n);
            return { name: ix.name, keyPath: ix.keyPath, unique: ix.unique, multiEntry: ix.multiEntry };
          }),
          records: []
        };
        for (var r = 0; r < keys.length; r++) store.records.push([await enc(keys[r]), await enc(values[r])]);
        entry.stores.push(store);
      }
      out.indexedDB.push(entry);
    } finally {
      db.close();
    }
  }
  return out;
}

async function importAll(dump) {
  if (dump.origin !== location.origin) throw new Error('the snapshot is of ' + dump.origin + ', the page is on ' + location.origin);
  var have = await indexedDB.databases();
  if (localStorage.length > 0 || have.length > 0) {
    return { notEmpty: localStorage.length + ' localStorage keys, ' + have.length + ' IndexedDB databases' };
  }
  var records = 0;
  for (var d = 0; d < dump.indexedDB.length; d++) {
    var e = dump.indexedDB[d];
    var db = await openDb(e.name, e.version, function (db) {
      e.stores.forEach(function (s) {
        var opts = { autoIncrement: !!s.autoIncrement };
        if (s.keyPath !== null && s.keyPath !== undefined) opts.keyPath = s.keyPath;
        var os = db.createObjectStore(s.name, opts);
        s.indexes.forEach(function (ix) { os.createIndex(ix.name, ix.keyPath, { unique: ix.unique, multiEntry: ix.multiEntry }); });
      });
    });
    try {
      for (var s = 0; s < e.stores.length; s++) {
        var st = e.stores[s];
        if (!st.records.length) continue;
        var tx = db.transaction(st.name, 'readwrite');
        var os = tx.objectStore(st.name);
        var inline = st.keyPath !== null && st.keyPath !== undefined;
        st.records.forEach(function (rec) {
          if (inline) os.put(dec(rec[1])); else os.put(dec(rec[1]), dec(rec[0]));
        });
        records += st.records.length;
        await txDone(tx);
      }
    } finally {
      db.close();
    }
  }
  var keys = Object.keys(dump.localStorage);
  keys.forEach(function (k) { localStorage.setItem(k, dump.localStorage[k]); });
  return { ok: { databases: dump.indexedDB.length, records: records, keys: keys.length } };
}

(mode === 'export'
  ? exportAll(param).then(function (dump) { return { ok: dump }; })
  : importAll(param)
).then(done, function (e) {
  if (e && e.tooLarge) done({ tooLarge: Math.ceil(size) });
  else done({ err: String((e && e.message) || e) });
});
