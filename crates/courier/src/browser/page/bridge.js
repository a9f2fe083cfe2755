// Courier's in-page bridge to WhatsApp Web's own modules. Evaluated once per
// page load over WebDriver with the names of config/wa-web.toml as its one
// argument (N). Every module, member, event and state name goes through the
// helpers mod('Key'), get(x, 'key'), call(x, 'key', …), put(x, 'key', v),
// on(x, 'event_key', f) and st('KEY'), which look the page's names up in N:
// this script spells no WhatsApp name itself (a unit test checks both).
// Returns {installed: true}, {missing: "<module or member>"} or {error: "not_loaded"}.
var N = arguments[0];
if (window.__courier && window.__courier.build === N.build) return { installed: true };
if (typeof window.require !== 'function') return { error: 'not_loaded' };

function missing(what) {
  var e = new Error(what + ' missing');
  e.courierMissing = what;
  return e;
}
function name(section, k) {
  var v = N[section][k];
  if (v === undefined) throw new Error('courier: no ' + section + ' name for ' + k);
  return v;
}
function mod(k) {
  var d = N.mod[k];
  if (!d) throw new Error('courier: no module key ' + k);
  var m = null;
  try { m = window.require(d.module); } catch (e) { m = null; }
  if (!m) throw missing(d.module);
  if (d.export) {
    if (!m[d.export]) throw missing(d.module + '.' + d.export);
    m = m[d.export];
  }
  return m;
}
function get(o, k) { return o === null || o === undefined ? undefined : o[name('m', k)]; }
function put(o, k, v) { o[name('m', k)] = v; return o; }
function call(o, k) {
  var f = get(o, k);
  if (typeof f !== 'function') throw missing(k);
  return f.apply(o, Array.prototype.slice.call(arguments, 2));
}
function on(o, k, f) { return call(o, 'on', name('ev', k), f); }
function st(k) { return name('st', k); }
function ser(wid) {
  if (wid === null || wid === undefined) return null;
  return typeof wid === 'string' ? wid : (get(wid, '_serialized') || null);
}
function coll(k) { return get(mod('Collections'), k); }
function models(c) { return c ? call(c, 'getModelsArray') : []; }
function wid(id) { return call(mod('WidFactory'), 'createWid', id); }
function me() {
  var u = mod('MeUser');
  return call(u, 'getMaybeMePnUser') || call(u, 'getMaybeMeLidUser') || null;
}
function phoneOf(id) {
  if (!id) return null;
  var user = String(id).split('@')[0].split(':')[0];
  return /^[0-9]{6,20}$/.test(user) ? '+' + user : null;
}

// Checked at install: a build that moved a module or method is reported by
// name before anything is attempted.
var needed = [
  ['Socket', ['on', 'state']], ['Conn', []], ['Cmd', ['on']], ['MeUser', ['getMaybeMePnUser', 'getMaybeMeLidUser']],
  ['Collections', ['Chat', 'Msg', 'Contact', 'GroupMetadata']], ['WidFactory', ['createWid']],
  ['QueryExists', ['queryWidExists']], ['FindChat', ['findOrCreateLatestChat']],
  ['SendMsg', ['addAndSendMsgToChat']], ['MsgKey', ['newId']], ['MediaOpaqueData', ['createFromData']],
  ['PrepRawMedia', ['prepRawMedia']], ['LinkPreview', ['getLinkPreview']]
];
for (var i = 0; i < needed.length; i++) {
  var m;
  try { m = mod(needed[i][0]); } catch (e) { if (e.courierMissing) return { missing: e.courierMissing }; throw e; }
  for (var j = 0; j < needed[i][1].length; j++) {
    if (get(m, needed[i][1][j]) === undefined) return { missing: N.mod[needed[i][0]].module + '.' + name('m', needed[i][1][j]) };
  }
}

var MAX_ACKS = 10000;
var acks = [];
var lostAcks = 0;
// Acks not yet drained survive the page going away (a logout, a ban or a
// conflict navigates or reloads): kept in sessionStorage on pagehide, taken
// back when the next page load installs the bridge.
var KEEP = 'courier.undrainedAcks';
try {
  var kept = JSON.parse(sessionStorage.getItem(KEEP) || '[]');
  if (Array.isArray(kept)) acks = kept.slice(-MAX_ACKS);
  sessionStorage.removeItem(KEEP);
} catch (e) { acks = []; }
window.addEventListener('pagehide', function () {
  try { if (acks.length) sessionStorage.setItem(KEEP, JSON.stringify(acks)); } catch (e) { /* storage full: the catch-up covers it */ }
});
var events = { loggedOut: false, states: [] };
on(coll('Msg'), 'change_ack', function (msg, ack) {
  var id = ser(get(msg, 'id'));
  if (!id) return;
  if (acks.length >= MAX_ACKS) { acks.shift(); lostAcks += 1; }
  acks.push([id, typeof ack === 'number' ? ack : get(msg, 'ack')]);
});
on(mod('Socket'), 'change_state', function () {
  events.states.push(get(mod('Socket'), 'state'));
  if (events.states.length > 50) events.states.shift();
});
on(mod('Cmd'), 'logout', function () { events.loggedOut = true; });

function withDeadline(p, ms, what) {
  return new Promise(function (resolve, reject) {
    var t = setTimeout(function () { reject(new Error(what + ' timed out in the page after ' + ms + ' ms')); }, ms);
    Promise.resolve(p).then(function (v) { clearTimeout(t); resolve(v); }, function (e) { clearTimeout(t); reject(e); });
  });
}

async function onWhatsApp(w) {
  var r = await call(mod('QueryExists'), 'queryWidExists', w);
  return !!(r && get(r, 'wid'));
}

async function findChat(id) {
  var w = wid(id);
  var chat = call(coll('Chat'), 'get', w);
  if (!chat) {
    var r = await call(mod('FindChat'), 'findOrCreateLatestChat', w);
    chat = r ? get(r, 'chat') : null;
  }
  if (!chat) { var e = new Error('no such chat ' + id); e.courierCode = 'no_such_chat'; throw e; }
  return chat;
}

function b64bytes(b64) {
  var bin = atob(b64);
  var out = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function outgoingView(m) {
  var key = get(m, 'id');
  var type = get(m, 'type');
  return {
    data_id: ser(key),
    text: get(m, 'caption') || get(m, 'body') || null,
    ack: get(m, 'ack'),
    media: !!get(m, 'mimetype'),
    link_preview: !!get(m, 'preview'),
    t: get(m, 't') || null,
    type: type || null
  };
}

var api = {
  state: function () {
    var s = mod('Socket');
    var w = me();
    return {
      state: get(s, 'state') || null,
      synced: !!get(s, 'hasSynced'),
      me: ser(w),
      connected: st('CONNECTED'),
      conflict: st('CONFLICT'),
      blocked: [st('TOS_BLOCK'), st('SMB_TOS_BLOCK'), st('PROXYBLOCK')],
      unpaired: [st('UNPAIRED'), st('UNPAIRED_IDLE')],
      logout: events.loggedOut
    };
  },
  chats: function () {
    return models(coll('Chat')).filter(function (c) { return ser(get(c, 'id')); }).map(function (c) {
      var gm = get(c, 'groupMetadata');
      return { id: ser(get(c, 'id')), name: get(c, 'formattedTitle') || get(c, 'name') || '', group: !!gm };
    });
  },
  groups: async function () {
    var out = [];
    var chats = models(coll('Chat')).filter(function (c) { return !!get(c, 'groupMetadata'); });
    for (var i = 0; i < chats.length; i++) {
      var c = chats[i];
      var id = ser(get(c, 'id'));
      await call(coll('GroupMetadata'), 'update', wid(id));
      var gm = get(c, 'groupMetadata');
      out.push({ id: id, name: get(c, 'formattedTitle') || get(c, 'name') || '', members: models(get(gm, 'participants')).length });
    }
    return out;
  },
  participants: async function (a) {
    var w = wid(a.groupId);
    var chat = call(coll('Chat'), 'get', w);
    if (!chat || !get(chat, 'groupMetadata')) { var e = new Error('no such chat ' + a.groupId); e.courierCode = 'no_such_chat'; throw e; }
    await call(coll('GroupMetadata'), 'update', w);
    var gm = get(chat, 'groupMetadata');
    return models(get(gm, 'participants')).map(function (p) {
      var id = ser(get(p, 'id'));
      var contact = get(p, 'contact');
      var pn = ser(get(contact, 'phoneNumber'));
      var sa = !!get(p, 'isSuperAdmin');
      return {
        id: id,
        name: get(contact, 'name') || null,
        phone: phoneOf(pn) || (id && id.slice(-4) !== '@lid' ? phoneOf(id) : null),
        admin: !!get(p, 'isAdmin') || sa,
        super_admin: sa
      };
    });
  },
  // Unlinks this device (WhatsApp Web then shows its QR again). The page
  // may reload while the call settles: the caller checks the screen after.
  logout: async function () {
    await call(mod('Socket'), 'logout');
    return true;
  },
  exists: async function (a) { return onWhatsApp(wid(a.number)); },
  open: async function (a) { await findChat(a.target); return true; },
  send: async function (a) {
    // The first send to a number outside the chat list asks whether it is
    // on WhatsApp in the same call (one round trip less than asking first);
    // a chat in the list is known to WhatsApp already.
    if (a.checkNumber && !call(coll('Chat'), 'get', wid(a.target))) {
      if (!(await onWhatsApp(wid(a.target)))) { var e = new Error(a.target + ' is not on WhatsApp'); e.courierCode = 'not_on_whatsapp'; throw e; }
    }
    var chat = await findChat(a.target);
    var from = me();
    var K = mod('MsgKey');
    var keyInit = {};
    put(keyInit, 'from', from);
    put(keyInit, 'to', get(chat, 'id'));
    put(keyInit, 'id', await call(K, 'newId'));
    put(keyInit, 'participant', call(get(chat, 'id'), 'isGroup') ? from : undefined);
    put(keyInit, 'selfDir', 'out');
    var key = new K(keyInit);
    var msg = {};
    put(msg, 'id', key);
    put(msg, 'ack', 0);
    put(msg, 'from', from);
    put(msg, 'to', get(chat, 'id'));
    put(msg, 'local', true);
    put(msg, 'self', 'out');
    put(msg, 't', Math.floor(Date.now() / 1000));
    put(msg, 'isNewMsg', true);
    put(msg, 'type', 'chat');
    put(msg, 'body', a.text || undefined);
    if (a.url) {
      var preview = await call(mod('LinkPreview'), 'getLinkPreview', a.url);
      var data = get(preview, 'data');
      if (data) {
        Object.assign(msg, data);
        put(msg, 'preview', true);
        put(msg, 'subtype', 'url');
      }
    }
    if (a.file) {
      var file = new File([b64bytes(a.file.b64)], a.file.fname, { type: a.file.mimeType });
      var opaque = await call(mod('MediaOpaqueData'), 'createFromData', file, a.file.mimeType);
      var prep = call(mod('PrepRawMedia'), 'prepRawMedia', opaque, { asDocument: !!a.file.asDocument });
      var md = await call(prep, 'waitForPrep');
      Object.assign(msg, md);
      put(msg, 'type', a.file.asDocument ? 'document' : get(md, 'type'));
      put(msg, 'mimetype', get(md, 'mimetype') || a.file.mimeType);
      put(msg, 'filename', get(md, 'filename') || a.file.fname);
      put(msg, 'caption', a.text || undefined);
      put(msg, 'body', undefined);
    }
    var pair = call(mod('SendMsg'), 'addAndSendMsgToChat', chat, msg);
    var id = ser(key);
    await withDeadline(pair[0], a.deadline, 'adding the message to the chat');
    var settled = 'sent';
    try {
      await withDeadline(pair[1], a.deadline, 'the send');
    } catch (e) {
      settled = String((e && e.message) || e);
    }
    var model = call(coll('Msg'), 'get', id);
    return { id: id, ack: model ? get(model, 'ack') : null, settled: settled, view: model ? outgoingView(model) : null };
  },
  recent: function (a) {
    var out = models(coll('Msg')).filter(function (m) {
      var k = get(m, 'id');
      return get(k, 'fromMe') && ser(get(k, 'remote')) === a.target;
    });
    return out.slice(Math.max(0, out.length - a.limit)).map(outgoingView);
  },
  acks_of: function (a) {
    return a.ids.map(function (id) {
      var m = call(coll('Msg'), 'get', id);
      return m ? get(m, 'ack') : null;
    });
  },
  drain: function () {
    var out = acks.splice(0, acks.length);
    var lost = lostAcks;
    lostAcks = 0;
    return { acks: out, lost: lost };
  }
};

window.__courier = {
  build: N.build,
  run: function (fn, args, deadline) {
    var f = api[fn];
    if (!f) return Promise.resolve({ err: 'courier: no bridge function ' + fn });
    return withDeadline(Promise.resolve().then(function () { return f(args || {}); }), deadline, fn)
      .then(function (v) { return { ok: v === undefined ? null : v }; }, function (e) {
        return { err: String((e && e.message) || e), missing: (e && e.courierMissing) || null, code: (e && e.courierCode) || null };
      });
  }
};
return { installed: true };
