// The simulated WhatsApp Web page. It long-polls /_page/api/state for what to
// show, serves WhatsApp Web's module contract from it (window.require(NAME),
// names from config/wa-web.toml injected as window.SIM.waweb; see the
// "modules" section), and renders the DOM of config/selectors.toml (injected
// as window.SIM.selectors) for the QR, login and fault screens and as
// evidence. Updates are made in place, keyed by chat and message id, so
// element references a WebDriver client holds stay valid.
(function () {
  'use strict';
  var S = window.SIM.selectors;
  var params = new URLSearchParams(location.search);
  var ACCOUNT = params.get('account');
  var CLIENT = randomHex(16);
  var app = document.getElementById('app');
  var screen = null;
  var refs = {};
  var etag = null;
  var pollAbort = null;
  var stopped = false;
  var openChat = null;
  var chats = [];
  var rows = new Map();
  var chatItems = new Map();
  var pendingPhone = location.pathname === '/send' ? params.get('phone') : null;
  var ORDER = { pending: 0, server: 1, device: 2, read: 3 };
  var MAX_CHAT_ROWS = 200;
  var LABEL = { pending: ' Pending ', server: ' Sent ', device: ' Delivered ', read: S.ack.read_label, error: ' Failed ' };
  var ALT = window.SIM.variant === 'alternate';

  function randomHex(n) {
    var b = new Uint8Array(n);
    crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return ('0' + x.toString(16)).slice(-2); }).join('').toUpperCase();
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  // The session lives where real WhatsApp Web keeps it: the keys in the
  // origin's IndexedDB (database `wawc`, store `user`, as binary), the own id
  // in localStorage (`last-wid-md`). A profile holding only one of the two is
  // not paired. SESSION is the token loaded at start (or stored since).
  var SESSION = null;
  var IDB_NAME = 'wawc', IDB_STORE = 'user';
  function session() { return SESSION; }
  function auth() { return { account: ACCOUNT, client: CLIENT, session: session() }; }
  function idb() {
    return new Promise(function (resolve, reject) {
      var r = indexedDB.open(IDB_NAME, 1);
      r.onupgradeneeded = function () { r.result.createObjectStore(IDB_STORE, { keyPath: 'key' }); };
      r.onsuccess = function () { resolve(r.result); };
      r.onerror = function () { reject(r.error); };
    });
  }
  function idbDo(mode, f) {
    return idb().then(function (db) {
      return new Promise(function (resolve, reject) {
        var tx = db.transaction(IDB_STORE, mode);
        var out = f(tx.objectStore(IDB_STORE));
        tx.oncomplete = function () { db.close(); resolve(out && out.result); };
        tx.onerror = function () { db.close(); reject(tx.error); };
      });
    });
  }
  function hexToBytes(h) {
    var b = new Uint8Array(h.length / 2);
    for (var i = 0; i < b.length; i++) b[i] = parseInt(h.substr(2 * i, 2), 16);
    return b.buffer;
  }
  function bytesToHex(buf) {
    return Array.prototype.map.call(new Uint8Array(buf), function (x) { return ('0' + x.toString(16)).slice(-2); }).join('').toUpperCase();
  }
  async function loadSession() {
    try {
      var rec = await idbDo('readonly', function (s) { return s.get(S.storage.session_key); });
      var id = localStorage.getItem(S.storage.last_wid_md_key);
      SESSION = rec && rec.value instanceof ArrayBuffer && id ? bytesToHex(rec.value) : null;
    } catch (e) {
      SESSION = null;
    }
  }
  function clearSession() {
    SESSION = null;
    [S.storage.session_key, S.storage.last_wid_md_key, S.storage.last_wid_key].forEach(function (k) {
      localStorage.removeItem(k);
    });
    return new Promise(function (resolve) {
      var r = indexedDB.deleteDatabase(IDB_NAME);
      r.onsuccess = r.onerror = r.onblocked = function () { resolve(); };
    });
  }

  async function api(path, body, signal) {
    var r = await fetch('/_page/api/' + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(Object.assign(auth(), body || {})),
      signal: signal
    });
    var j = null;
    try {
      j = await r.json();
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      j = null;
    }
    return { ok: r.ok, status: r.status, body: j };
  }

  function repoll() {
    etag = null;
    if (pollAbort) pollAbort.abort();
  }

  async function pollLoop() {
    while (!stopped) {
      pollAbort = new AbortController();
      var res;
      try {
        res = await api('state', { chat: openChat ? openChat.id : null, etag: etag }, pollAbort.signal);
      } catch (e) {
        if (e && e.name === 'AbortError') continue;
        await sleep(500);
        continue;
      }
      if (stopped) return;
      if (!res.ok || !res.body) {
        renderError(res);
        await sleep(1000);
        continue;
      }
      etag = res.body.etag;
      try {
        render(res.body.view);
      } catch (e) {
        // Keep polling whatever happens; a broken render shows on the next view.
        etag = null;
        if (window.console) console.error(e);
        await sleep(200);
      }
    }
  }

  function setScreen(name, build) {
    if (screen === name) return false;
    screen = name;
    refs = {};
    openChat = null;
    rows = new Map();
    chatItems = new Map();
    app.textContent = '';
    var root = el('div', { class: 'root' });
    app.appendChild(root);
    refs.root = root;
    build(root);
    return true;
  }

  function render(v) {
    if (v.screen === 'loading' || v.screen === 'main') storeSession(v.session);
    modelsFrom(v);
    switch (v.screen) {
      case 'qr': renderQr(v); break;
      case 'loading': renderLoading(v); break;
      case 'main': renderMain(v); break;
      case 'conflict': renderConflict(); break;
      case 'banned': renderBanned(); break;
      case 'logged_out': loggedOut(); break;
    }
  }

  function renderError(res) {
    var msg = (res.body && res.body.message) || ('error ' + res.status);
    setScreen('error', function (root) { refs.msg = el('div', { class: 'error-screen' }); root.append(refs.msg); });
    refs.msg.textContent = 'Simulator: ' + msg;
  }

  // ------------------------------------------------------------ login

  function renderQr(v) {
    setScreen('qr', function (root) {
      var landing = el('div', { class: 'landing' });
      var box = el('div', { 'data-ref': '' });
      landing.append(el('div', { class: 'logo' }, 'Use WhatsApp on your computer'), box,
        el('div', { class: 'hint' }, 'Scan the QR code with your phone'));
      root.append(landing);
      refs.box = box;
    });
    var box = refs.box;
    if (v.token) {
      var canvas = box.querySelector('canvas');
      if (box.getAttribute('data-ref') !== v.token || !canvas) {
        if (!canvas) {
          box.textContent = '';
          canvas = el('canvas', { 'aria-label': 'Scan me!', role: 'img' });
          box.append(canvas);
        }
        box.setAttribute('data-ref', v.token);
        drawQr(canvas, v.modules);
      }
    } else if (!box.querySelector('button')) {
      box.textContent = '';
      var span = el('span');
      var b = el('button', {}, 'Click to reload QR code');
      b.addEventListener('click', async function () {
        b.disabled = true;
        await api('qr/reload');
        repoll();
      });
      span.append(b);
      box.append(span);
    }
  }

  function drawQr(canvas, modules) {
    var n = modules.length, quiet = 4, scale = Math.max(2, Math.floor(256 / (n + 2 * quiet)));
    var size = (n + 2 * quiet) * scale;
    canvas.width = size;
    canvas.height = size;
    var ctx = canvas.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, size, size);
    ctx.fillStyle = '#122e31';
    for (var y = 0; y < n; y++) {
      for (var x = 0; x < n; x++) {
        if (modules[y][x] === '1') ctx.fillRect((x + quiet) * scale, (y + quiet) * scale, scale, scale);
      }
    }
  }

  function renderLoading(v) {
    setScreen('loading', function (root) {
      var landing = el('div', { class: 'landing' });
      var bar = el('div');
      refs.progress = el('progress', { max: '100', value: '0' });
      bar.append(refs.progress);
      landing.append(el('div', { class: 'logo' }, 'WhatsApp'), bar, el('div', {}, 'Loading your chats'));
      root.append(landing);
    });
    refs.progress.value = v.progress;
  }

  // While the session is being written, the socket is not CONNECTED yet
  // (real WhatsApp Web stores its keys before it reports a synced session),
  // so a snapshot taken once the page is connected holds the session.
  var storing = null;
  function storeSession(s) {
    if (!s) return;
    var put = function (k, v) { if (localStorage.getItem(k) !== v) localStorage.setItem(k, v); };
    put(S.storage.last_wid_md_key, JSON.stringify(s.last_wid_md));
    put(S.storage.last_wid_key, JSON.stringify(s.last_wid));
    if (SESSION === s.token || storing) return;
    storing = idbDo('readwrite', function (st) { return st.put({ key: S.storage.session_key, value: hexToBytes(s.token) }); })
      .then(function () { SESSION = s.token; }, function (e) { if (window.console) console.error(e); })
      .then(function () { storing = null; repoll(); });
  }

  function loggedOut() {
    stopped = true;
    Cmd.trigger(N.ev.logout);
    var go = function () { location.replace('/?account=' + encodeURIComponent(ACCOUNT) + '&' + S.loading.post_logout_param + '=1'); };
    var wiping = storing || Promise.resolve();
    wiping.then(clearSession).then(go, go);
  }

  function renderConflict() {
    setScreen('conflict', function (root) {
      var box = el('div', { 'data-testid': 'conflict' });
      box.append(el('div', {}, 'WhatsApp is open in another window. Click "' + S.faults.use_here_text + '" to use WhatsApp in this window.'));
      var b = el('button', {}, S.faults.use_here_text);
      b.addEventListener('click', async function () {
        b.disabled = true;
        await api('takeover');
        repoll();
      });
      box.append(b);
      root.append(box);
    });
  }

  function renderBanned() {
    setScreen('banned', function (root) {
      root.append(el('div', { 'data-testid': 'banned' },
        'This account is not allowed to use WhatsApp due to spam.'));
    });
  }

  // ------------------------------------------------------------ main screen

  function renderMain(v) {
    var first = setScreen('main', buildMain);
    chats = v.chats;
    updateChatList(v.chats);
    if (openChat) updateMessages(v.messages);
    if (first && pendingPhone) {
      var id = pendingPhone.replace(/\D/g, '') + '@c.us';
      pendingPhone = null;
      openChatById(id);
    }
  }

  function buildMain(root) {
    root.classList.add('main-layout');
    var side = el('div', { id: 'side' });
    side.append(el('header', {}, 'Chats'));
    var pane = el('div', { id: 'pane-side', 'aria-label': 'Chat list' });
    refs.list = el('div', { role: 'list' });
    pane.append(refs.list);
    side.append(pane);
    refs.container = el('div', { id: 'main-container' });
    refs.intro = el('div', { class: 'intro', 'data-asset-intro-image-light': 'true' }, 'Select a chat to start messaging');
    refs.container.append(refs.intro);
    root.append(side, refs.container);
  }

  function updateChatList(list) {
    // Like the real virtualised list, the DOM shows a bounded window.
    list.slice(0, MAX_CHAT_ROWS).forEach(function (c) {
      var item = chatItems.get(c.id);
      if (!item) {
        if (ALT) {
          // The alternate markup: no id on the row, other classes, newest on top.
          item = el('div', { role: 'row', class: 'alt-chat' });
          item.append(el('div', { class: 'alt-title' }, c.name));
          refs.list.prepend(item);
        } else {
          item = el('div', { role: 'listitem', tabindex: '-1' });
          item.setAttribute(S.chat_list.chat_id_attr, c.id);
          item.append(el('span', { dir: 'auto', title: c.name }, c.name),
            el('span', { class: 'chat-sub' }, c.group ? c.members + ' members' : ''));
          refs.list.append(item);
        }
        item.addEventListener('click', function () { openChatById(c.id); });
        chatItems.set(c.id, item);
      }
    });
  }

  async function openChatById(id) {
    var chat = chats.find(function (c) { return c.id === id; });
    if (!chat) {
      var res = await api('chat', { chat: id });
      if (!res.ok) { toast((res.body && res.body.message) || 'Phone number shared via url is invalid.'); return; }
      chat = res.body;
    }
    openChatView(chat);
  }

  function openChatView(chat) {
    openChat = chat;
    rows = new Map();
    chatItems.forEach(function (item, id) { item.classList.toggle('selected', id === chat.id); });
    closeGroupInfo();
    if (refs.intro) { refs.intro.remove(); refs.intro = null; }
    if (refs.main) refs.main.remove();
    var main = el('div', { id: 'main' });
    var header = el('header');
    header.append(el('span', { dir: 'auto', title: chat.name }, chat.name));
    if (chat.group) header.append(el('span', { class: 'chat-sub' }, 'click here for group info'));
    header.addEventListener('click', function () { if (openChat && openChat.group) openGroupInfo(openChat); });
    refs.msgs = el('div', { class: 'messages', role: 'application' });
    var footer = el('footer');
    var attach = el('div', { title: 'Attach', role: 'button', tabindex: '0' });
    attach.append(el('span', { 'data-icon': 'plus' }));
    attach.addEventListener('click', function () { footer.classList.toggle('attach-open'); });
    var mediaInput = el('input', { type: 'file', accept: 'image/*,video/mp4,video/3gpp,video/quicktime', class: 'file-input' });
    var docInput = el('input', { type: 'file', accept: '*', class: 'file-input' });
    mediaInput.addEventListener('change', function () { chooseFile(mediaInput, false); });
    docInput.addEventListener('change', function () { chooseFile(docInput, true); });
    var compose = el('div', { contenteditable: 'true', 'data-tab': '10', role: 'textbox', 'aria-label': 'Type a message', title: 'Type a message' });
    // As on the real page, the send button replaces the microphone only while
    // the compose box holds text.
    var send = el('button', { 'aria-label': 'Send' });
    send.append(el('span', { 'data-icon': 'send' }));
    var mic = el('button', { 'aria-label': 'Voice message' });
    mic.append(el('span', { 'data-icon': 'mic-outlined' }));
    refs.send = send;
    refs.mic = mic;
    compose.addEventListener('input', function () {
      updateComposePreview();
      updateSendButton();
    });
    compose.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); sendComposed(); }
    });
    send.addEventListener('click', sendComposed);
    footer.append(attach, mediaInput, docInput, compose, mic);
    main.append(header, refs.msgs, footer);
    refs.main = main;
    refs.footer = footer;
    refs.compose = compose;
    refs.container.append(main);
    repoll();
  }

  function updateSendButton() {
    var hasText = (refs.compose.innerText || '').trim() !== '';
    if (hasText && !refs.send.isConnected) refs.mic.replaceWith(refs.send);
    if (!hasText && !refs.mic.isConnected) refs.send.replaceWith(refs.mic);
  }

  function findUrl(text) {
    var m = text.match(/https?:\/\/[^\s<>"]+/);
    return m ? m[0] : null;
  }

  function previewBox(url) {
    var host = url;
    try { host = new URL(url).host; } catch (e) { /* keep the raw text */ }
    var box = el('div', { 'data-testid': 'link-preview' });
    box.append(el('div', { class: 'title' }, host), el('div', { class: 'url' }, url));
    return box;
  }

  function updateComposePreview() {
    var url = findUrl(refs.compose.innerText || '');
    if (url && (!refs.preview || refs.preview.dataset.url !== url)) {
      if (refs.preview) refs.preview.remove();
      refs.preview = previewBox(url);
      refs.preview.dataset.url = url;
      refs.footer.prepend(refs.preview);
    } else if (!url && refs.preview) {
      refs.preview.remove();
      refs.preview = null;
    }
  }

  function sendComposed() {
    var text = (refs.compose.innerText || '').replace(/\u00a0/g, ' ').trim();
    if (!text) return;
    var url = findUrl(text);
    refs.compose.textContent = '';
    updateSendButton();
    if (refs.preview) { refs.preview.remove(); refs.preview = null; }
    sendMessage({ body: text, media: null, link_preview: url });
  }

  function chooseFile(input, asDocument) {
    var file = input.files && input.files[0];
    if (!file || !openChat) return;
    var mime = file.type || 'application/octet-stream';
    var kind = asDocument ? 'document' : mime.indexOf('image/') === 0 ? 'image' : mime.indexOf('video/') === 0 ? 'video' : 'document';
    var editor = el('div', { 'data-testid': 'media-editor' });
    var caption = el('div', { contenteditable: 'true', 'aria-label': 'Add a caption', role: 'textbox' });
    var send = el('div', { role: 'button', 'aria-label': 'Send', tabindex: '0' });
    send.append(el('span', { 'data-icon': 'send' }));
    editor.append(el('div', {}, kind + ': ' + file.name), caption, send);
    send.addEventListener('click', function () {
      var body = (caption.innerText || '').trim() || null;
      editor.remove();
      input.value = '';
      sendMessage({ body: body, media: { kind: kind, name: file.name, mime: mime, size: file.size }, link_preview: null });
    });
    refs.root.append(editor);
  }

  async function sendMessage(m) {
    var id = '3EB0' + randomHex(8);
    var chat = openChat.id;
    var dataId = 'true_' + chat + '_' + id;
    addRow({ data_id: dataId, body: m.body, media: m.media, link_preview: m.link_preview, ack: 'pending', received_at: null });
    var res;
    try {
      res = await api('send', { message: { id: id, chat: chat, body: m.body, media: m.media, link_preview: m.link_preview } });
    } catch (e) {
      res = { ok: false, status: 0, body: { message: 'network error' } };
    }
    if (res.ok) {
      if (res.body.reload) { stopped = true; location.reload(); }
      return;
    }
    var r = rows.get(dataId);
    if (r) setAck(r, 'error');
    toast(res.status === 429 ? 'Message not sent: you have reached your messaging limit. Try again later.'
      : 'Message not sent: ' + ((res.body && res.body.message) || 'error'));
  }

  function addRow(m) {
    var wrap = el('div', { role: 'row' });
    var row = ALT ? el('div', { class: 'alt-msg' }) : el('div', { 'data-id': m.data_id, class: 'message-out' });
    if (m.media) row.append(el('div', { 'data-testid': 'media' }, m.media.kind + ': ' + m.media.name));
    if (m.link_preview) row.append(previewBox(m.link_preview));
    if (m.body) {
      var t = el('span', { class: 'selectable-text copyable-text', dir: 'ltr' });
      t.append(el('span', {}, m.body));
      row.append(t);
    }
    var meta = el('div', { class: 'meta' });
    var when = m.received_at ? new Date(m.received_at) : new Date();
    meta.append(el('span', { class: 'time' }, when.toTimeString().slice(0, 5)));
    var icon = el('span');
    meta.append(icon);
    row.append(meta);
    wrap.append(row);
    refs.msgs.append(wrap);
    var r = { icon: icon, ack: null };
    rows.set(m.data_id, r);
    setAck(r, m.ack);
    refs.msgs.scrollTop = refs.msgs.scrollHeight;
  }

  // Acks only move forward; a failure is final.
  function setAck(r, ack) {
    if (r.ack === 'error' || r.ack === ack) return;
    if (ack !== 'error' && r.ack !== null && ORDER[ack] <= ORDER[r.ack]) return;
    r.ack = ack;
    var icon = { error: S.ack.error_icon, pending: S.ack.pending_icon, server: S.ack.server_icon, device: S.ack.device_icon, read: S.ack.read_icon }[ack];
    r.icon.setAttribute(S.ack.icon_attr, icon);
    r.icon.setAttribute('aria-label', LABEL[ack]);
  }

  function updateMessages(list) {
    list.forEach(function (m) {
      var r = rows.get(m.data_id);
      if (r) setAck(r, m.ack); else addRow(m);
    });
  }

  function toast(text) {
    var t = el('div', { role: 'alert', 'data-testid': 'toast' }, text);
    document.body.append(t);
    setTimeout(function () { t.remove(); }, 6000);
  }

  // ------------------------------------------------------------ group info

  function closeGroupInfo() {
    if (refs.drawer) { refs.drawer.remove(); refs.drawer = null; }
  }

  function openGroupInfo(chat) {
    if (refs.drawer) return;
    var drawer = el('div', { 'data-testid': 'group-info-drawer' });
    var head = el('div', { class: 'head' });
    var close = el('div', { role: 'button', 'aria-label': 'Close', tabindex: '0' }, '×');
    close.addEventListener('click', closeGroupInfo);
    head.append(close, el('span', { dir: 'auto', title: chat.name }, chat.name));
    var count = el('span', { 'data-testid': 'member-count' }, 'Group · ' + chat.members + ' members');
    var list = el('div', { role: 'list', 'aria-label': 'Participants' });
    drawer.append(head, count, list);
    refs.root.append(drawer);
    refs.drawer = drawer;
    var state = { loaded: 0, total: null, busy: false };
    async function more() {
      if (state.busy || (state.total !== null && state.loaded >= state.total) || refs.drawer !== drawer) return;
      state.busy = true;
      var res = await api('participants', { chat: chat.id, offset: state.loaded, limit: 20 });
      state.busy = false;
      if (!res.ok) return;
      state.total = res.body.total;
      count.textContent = 'Group · ' + state.total + ' members';
      res.body.participants.forEach(function (p) {
        var item = el('div', { role: 'listitem' });
        item.setAttribute(S.group_info.participant_id_attr, p.id);
        item.append(el('span', { 'data-testid': 'participant-name', dir: 'auto' }, p.name || p.phone || p.id));
        if (p.phone) item.append(el('span', { 'data-testid': 'participant-phone' }, p.phone));
        if (p.admin) item.append(el('div', { 'data-testid': 'admin-badge' }, p.super_admin ? S.group_info.super_admin_text : S.group_info.admin_text));
        list.append(item);
      });
      state.loaded += res.body.participants.length;
      if (list.scrollHeight <= list.clientHeight + 80) more();
    }
    list.addEventListener('scroll', function () {
      if (list.scrollTop + list.clientHeight >= list.scrollHeight - 80) more();
    });
    more();
  }

  // ------------------------------------------------------------ modules
  // WhatsApp Web's module contract, as the maintained clients use it:
  // window.require(NAME) returns the objects below, backed by the long-polled
  // view. Module names come only from config/wa-web.toml (window.SIM.waweb):
  // define() refuses a key the file lacks, and require() knows no other name,
  // so the simulator cannot serve a module real WhatsApp Web does not have.
  // Promises resolve when the real ones would: the send's second promise once
  // the server has the message, ack events as acks arrive.

  var N = window.SIM.waweb;
  var registry = {};
  function define(key, value) {
    var d = N.mod[key];
    if (!d) throw new Error('simulator: module ' + key + ' is not in config/wa-web.toml');
    if (d.export) {
      registry[d.module] = registry[d.module] || {};
      registry[d.module][d.export] = value;
    } else {
      registry[d.module] = value;
    }
  }
  window.require = function (name) {
    if (!Object.prototype.hasOwnProperty.call(registry, name)) throw new Error("Cannot find module '" + name + "'");
    return registry[name];
  };

  function Emitter() { this._handlers = {}; }
  Emitter.prototype.on = function (ev, f) { (this._handlers[ev] = this._handlers[ev] || []).push(f); return this; };
  Emitter.prototype.off = function (ev, f) {
    var h = this._handlers[ev];
    if (h) this._handlers[ev] = h.filter(function (x) { return x !== f; });
    return this;
  };
  Emitter.prototype.trigger = function (ev) {
    var args = Array.prototype.slice.call(arguments, 1);
    (this._handlers[ev] || []).slice().forEach(function (f) {
      try { f.apply(null, args); } catch (e) { if (window.console) console.error(e); }
    });
  };
  function emitter(o) { var e = new Emitter(); Object.keys(o || {}).forEach(function (k) { e[k] = o[k]; }); return e; }

  function Wid(s) {
    this._serialized = s;
    var at = s.indexOf('@');
    this.user = s.slice(0, at);
    this.server = s.slice(at + 1);
  }
  Wid.prototype.isGroup = function () { return this.server === 'g.us'; };
  Wid.prototype.toString = function () { return this._serialized; };
  function idOf(x) { return typeof x === 'string' ? x : (x && x._serialized) || null; }
  function toWid(x) { return x instanceof Wid ? x : new Wid(idOf(x)); }

  function Collection() { Emitter.call(this); this._models = []; this._byId = new Map(); }
  Collection.prototype = Object.create(Emitter.prototype);
  Collection.prototype.getModelsArray = function () { return this._models.slice(); };
  Collection.prototype.get = function (id) { return this._byId.get(idOf(id)); };
  Collection.prototype.add = function (m) {
    var k = idOf(m.id);
    var had = this._byId.get(k);
    if (had) return had;
    this._byId.set(k, m);
    this._models.push(m);
    return m;
  };
  Collection.prototype.reset = function (list) {
    this._models = [];
    this._byId = new Map();
    list.forEach(this.add, this);
  };

  // The message key: own messages serialize as true_<chat>_<ID>.
  function MsgKey(o) {
    this.fromMe = o.selfDir === 'out' || o.fromMe === true;
    this.remote = toWid(o.to || o.remote);
    this.id = o.id;
    this.participant = o.participant;
    this._serialized = (this.fromMe ? 'true' : 'false') + '_' + this.remote._serialized + '_' + o.id;
  }
  MsgKey.newId = function () { return Promise.resolve('3EB0' + randomHex(8)); };
  MsgKey.prototype.toString = function () { return this._serialized; };

  var Socket = emitter({ state: N.st.OPENING, hasSynced: false });
  // WhatsApp Web's logout: unlinks this device; the next state answer shows
  // the logged-out page, then the QR.
  Socket.logout = function () {
    return api('logout', {}).then(function (res) {
      if (!res.ok) throw new Error((res.body && res.body.message) || ('logout: error ' + res.status));
      return true;
    });
  };
  var Conn = emitter({ ref: null });
  var Cmd = emitter({});
  var me = null;
  var Chat = new Collection();
  var Msg = new Collection();
  var Contact = new Collection();
  var GroupMetadata = new Collection();

  function setSocket(state, synced) {
    if (Socket.state !== state) { Socket.state = state; Socket.trigger(N.ev.change_state, Socket, state); }
    if (Socket.hasSynced !== synced) { Socket.hasSynced = synced; if (synced) Socket.trigger(N.ev.change_hasSynced, Socket, synced); }
  }

  function setMsgAck(m, ack) {
    if (m.ack === ack || m.ack === -1) return;
    if (ack !== -1 && ack < m.ack) return; // acks only move forward
    m.ack = ack;
    m.trigger(N.ev.change_ack, m, ack);
    Msg.trigger(N.ev.change_ack, m, ack);
  }

  function msgFromView(v) {
    var m = emitter({
      id: new MsgKey({ fromMe: true, to: v.chat, id: v.id }),
      ack: v.ack_code,
      t: Math.floor(new Date(v.received_at).getTime() / 1000),
      type: v.media ? v.media.kind : 'chat'
    });
    if (v.media) {
      m.caption = v.body || undefined;
      m.mimetype = v.media.mime;
      m.filename = v.media.name;
      m.size = v.media.size;
    } else {
      m.body = v.body || undefined;
    }
    if (v.link_preview) { m.preview = true; m.canonicalUrl = v.link_preview; }
    return m;
  }

  function chatModel(c) {
    var chat = Chat.get(c.id);
    if (!chat) {
      chat = { id: new Wid(c.id) };
      Chat.add(chat);
    }
    chat.name = c.name;
    chat.formattedTitle = c.name;
    if (c.group && !chat.groupMetadata) {
      chat.groupMetadata = { id: chat.id, participants: new Collection() };
      GroupMetadata.add(chat.groupMetadata);
    }
    return chat;
  }

  // Keeps the models in step with the view (called on every long-poll answer).
  function modelsFrom(v) {
    switch (v.screen) {
      case 'qr':
        if (Conn.ref !== (v.token || null)) { Conn.ref = v.token || null; Conn.trigger(N.ev.change_ref, Conn, Conn.ref); }
        setSocket(v.token ? N.st.UNPAIRED : N.st.UNPAIRED_IDLE, false);
        break;
      case 'loading':
        if (v.session) me = new Wid(v.session.last_wid);
        setSocket(N.st.OPENING, false);
        break;
      case 'main':
        me = new Wid(v.session.last_wid);
        v.chats.forEach(chatModel);
        v.msgs.forEach(function (mv) {
          var m = Msg.get(mv.data_id);
          if (m) setMsgAck(m, mv.ack_code); else Msg.add(msgFromView(mv));
        });
        // Connected once the session is in storage (storeSession repolls).
        if (!storing && SESSION === v.session.token) setSocket(N.st.CONNECTED, true);
        else setSocket(N.st.OPENING, false);
        break;
      case 'conflict': setSocket(N.st.CONFLICT, Socket.hasSynced); break;
      case 'banned': setSocket(N.st.TOS_BLOCK, false); break;
      case 'logged_out': me = null; setSocket(N.st.UNPAIRED, false); break;
    }
  }

  function participantModel(p) {
    var id = new Wid(p.id);
    var contact = Contact.get(p.id);
    if (!contact) { contact = { id: id }; Contact.add(contact); }
    contact.name = p.name || undefined;
    // A @lid member hides its number; its contact may carry it.
    if (id.server === 'lid' && p.phone) contact.phoneNumber = new Wid(p.phone.replace(/\D/g, '') + '@c.us');
    return { id: id, isAdmin: !!p.admin, isSuperAdmin: !!p.super_admin, contact: contact };
  }

  GroupMetadata.update = async function (wid) {
    var id = idOf(wid);
    var all = [];
    for (;;) {
      var res = await api('participants', { chat: id, offset: all.length, limit: 200 });
      if (!res.ok) throw new Error((res.body && res.body.message) || ('group metadata: error ' + res.status));
      all = all.concat(res.body.participants);
      if (!res.body.participants.length || all.length >= res.body.total) break;
    }
    var gm = GroupMetadata.get(id);
    if (!gm) { gm = { id: toWid(id), participants: new Collection() }; GroupMetadata.add(gm); }
    gm.participants.reset(all.map(participantModel));
    return gm;
  };

  function mediaKind(mime, asDocument) {
    if (asDocument) return 'document';
    if (mime.indexOf('image/') === 0) return 'image';
    if (mime.indexOf('video/') === 0) return 'video';
    return 'document';
  }

  function addAndSendMsgToChat(chat, msg) {
    var m = emitter(msg);
    if (!(m.id instanceof MsgKey)) m.id = new MsgKey(m.id);
    m.ack = 0;
    Msg.add(m);
    var added = Promise.resolve(m);
    var sent = new Promise(function (resolve) {
      function settle(model, ack) {
        if (ack >= 1 || ack === -1) { m.off(N.ev.change_ack, settle); resolve(m); }
      }
      m.on(N.ev.change_ack, settle);
    });
    var media = m.mimetype ? { kind: mediaKind(m.mimetype, m.type === 'document'), name: m.filename, mime: m.mimetype, size: m.size } : null;
    var body = media ? (m.caption || null) : (m.body || null);
    api('send', { message: { id: m.id.id, chat: idOf(chat.id), body: body, media: media, link_preview: m.preview ? (m.canonicalUrl || null) : null } })
      .then(function (res) {
        if (res.ok) {
          if (res.body.reload) { stopped = true; location.reload(); return; }
          setMsgAck(m, res.body.message.ack_code);
          return;
        }
        setMsgAck(m, -1);
        toast(res.status === 429 ? 'Message not sent: you have reached your messaging limit. Try again later.'
          : 'Message not sent: ' + ((res.body && res.body.message) || 'error'));
      }, function () { setMsgAck(m, -1); });
    return [added, sent];
  }

  define('Socket', Socket);
  define('Conn', Conn);
  define('Cmd', Cmd);
  define('MeUser', {
    getMaybeMePnUser: function () { return me && me.server === 'c.us' ? me : null; },
    getMaybeMeLidUser: function () { return me && me.server === 'lid' ? me : null; }
  });
  define('Collections', { Chat: Chat, Msg: Msg, Contact: Contact, GroupMetadata: GroupMetadata });
  define('WidFactory', { createWid: function (s) { return new Wid(idOf(s)); } });
  define('QueryExists', {
    queryWidExists: async function (wid) {
      var res = await api('exists', { id: idOf(wid) });
      if (!res.ok) throw new Error((res.body && res.body.message) || ('exists: error ' + res.status));
      return res.body.exists ? { wid: toWid(wid) } : {};
    }
  });
  define('FindChat', {
    findOrCreateLatestChat: async function (wid) {
      var have = Chat.get(wid);
      if (have) return { chat: have };
      var w = toWid(wid);
      if (w.server === 'c.us') {
        // A person's latest chat is created in the page (the server learns
        // of it with the first message); its title from a known contact.
        var contact = Contact.get(w);
        return { chat: chatModel({ id: w._serialized, name: (contact && contact.name) || '+' + w.user, group: false }) };
      }
      var res = await api('chat', { chat: idOf(wid) });
      if (res.status === 404) return {};
      if (!res.ok) throw new Error((res.body && res.body.message) || ('find chat: error ' + res.status));
      return { chat: chatModel(res.body) };
    }
  });
  define('SendMsg', { addAndSendMsgToChat: addAndSendMsgToChat });
  define('MsgKey', MsgKey);
  define('MediaOpaqueData', {
    createFromData: function (file, type) {
      return Promise.resolve({ file: file, type: type || file.type });
    }
  });
  define('PrepRawMedia', {
    prepRawMedia: function (opaque, opts) {
      var data = { type: mediaKind(opaque.type, opts && opts.asDocument), mimetype: opaque.type, filename: opaque.file.name, size: opaque.file.size };
      return { waitForPrep: function () { return Promise.resolve(data); } };
    }
  });
  define('LinkPreview', {
    getLinkPreview: function (url) { return Promise.resolve({ data: { canonicalUrl: String(url) } }); }
  });

  if (!ACCOUNT) {
    app.textContent = 'Simulator: open this page as /?account=<account id>';
    return;
  }
  loadSession().then(pollLoop);
})();
