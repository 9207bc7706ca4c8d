/**
 * The approvals page served by the admin listener: plain HTML, CSS and JS, no build step and no
 * third-party code. Data is rendered with textContent only (request fields come from agents and must
 * never become markup). The admin token is kept in the tab's sessionStorage and sent as a header.
 */

export const APPROVALS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Firma — approvals</title>
<link rel="stylesheet" href="/approvals/ui.css">
</head>
<body>
<header>
  <h1>Firma approvals</h1>
  <span id="live" class="muted">connecting…</span>
</header>
<section id="auth">
  <label>Admin token <input id="token" type="password" autocomplete="off" placeholder="FIRMA_ADMIN_TOKEN"></label>
  <button id="save-token" type="button">Use token</button>
  <span id="token-state" class="muted"></span>
</section>
<p id="message" role="status"></p>
<section>
  <h2>Waiting for a decision <span id="pending-count" class="count">0</span></h2>
  <table id="pending">
    <thead><tr><th>Agent</th><th>Request</th><th>Action</th><th>Risk</th><th>Policies</th><th>Body fields</th><th>Waiting</th><th>Decide</th></tr></thead>
    <tbody></tbody>
  </table>
  <p id="none" class="muted">No request is waiting.</p>
</section>
<section>
  <h2>Standing grants</h2>
  <table id="grants">
    <thead><tr><th>Agent</th><th>Action</th><th>Host</th><th>Granted by</th><th>Expires</th><th>Uses</th><th></th></tr></thead>
    <tbody></tbody>
  </table>
</section>
<script src="/approvals/ui.js"></script>
</body>
</html>
`;

export const APPROVALS_PAGE_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; }
header { display: flex; align-items: baseline; gap: 1rem; }
h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #d8dee4; vertical-align: top; }
th { font-weight: 600; background: #f6f8fa; }
code, .url { font-family: ui-monospace, monospace; font-size: 12.5px; word-break: break-all; }
.field { font-family: ui-monospace, monospace; font-size: 12.5px; white-space: nowrap; }
.muted { color: #656d76; }
.mcp { margin-top: .25rem; color: #57606a; }
.mcp .field { white-space: normal; word-break: break-all; }
.count { background: #cf222e; color: #fff; border-radius: 1rem; padding: 0 .5rem; font-size: .85rem; }
.risk-high, .risk-critical { color: #cf222e; font-weight: 600; }
button { margin: 0 .25rem .25rem 0; cursor: pointer; }
button.approve { background: #1f883d; color: #fff; border: 1px solid #1a7f37; border-radius: 4px; padding: .2rem .6rem; }
button.deny { background: #fff; color: #cf222e; border: 1px solid #cf222e; border-radius: 4px; padding: .2rem .6rem; }
input.minutes { width: 4rem; }
#message { min-height: 1.2rem; }
#message.error { color: #cf222e; }
`;

export const APPROVALS_PAGE_JS = `'use strict';
(function () {
  var tokenInput = document.getElementById('token');
  var message = document.getElementById('message');
  var live = document.getElementById('live');
  var pendingBody = document.querySelector('#pending tbody');
  var grantsBody = document.querySelector('#grants tbody');
  var pending = [];

  function token() { return sessionStorage.getItem('firma-admin-token') || ''; }
  function showTokenState() {
    document.getElementById('token-state').textContent = token() === '' ? 'no token: you can look, not decide' : 'token set for this tab';
  }
  document.getElementById('save-token').addEventListener('click', function () {
    sessionStorage.setItem('firma-admin-token', tokenInput.value.trim());
    tokenInput.value = '';
    showTokenState();
  });
  showTokenState();

  function say(text, isError) {
    message.textContent = text;
    message.className = isError ? 'error' : '';
  }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function waited(iso) {
    var s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return s < 60 ? s + ' s' : Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  }

  function act(path, body, done) {
    fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token() },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().then(function (j) { return { status: r.status, body: j }; });
    }).then(function (r) {
      if (r.status === 200) { say(done); refresh(); }
      else say((r.body && r.body.message) || ('failed: HTTP ' + r.status), true);
    }, function () { say('the sidecar did not answer', true); });
  }

  function renderPending() {
    pendingBody.textContent = '';
    document.getElementById('pending-count').textContent = String(pending.length);
    document.getElementById('none').hidden = pending.length > 0;
    pending.forEach(function (a) {
      var tr = el('tr');
      tr.dataset.approvalId = a.id;
      tr.appendChild(el('td', a.agent_id));
      var req = el('td');
      req.appendChild(el('strong', a.method + ' '));
      req.appendChild(el('span', a.url, 'url'));
      if (a.waiting > 1) req.appendChild(el('div', a.waiting + ' identical requests waiting', 'muted'));
      req.appendChild(el('div', a.reason, 'muted'));
      tr.appendChild(req);
      var action = el('td');
      action.appendChild(el('div', a.action_class));
      if (a.mcp) {
        // docs/mcp.md "Approvals": the server, method and exact tool name, and the opted-in arguments.
        var call = el('div', null, 'mcp');
        call.appendChild(el('div', 'MCP ' + a.mcp.server + ' ' + (a.mcp.method || '-'), 'field'));
        if (a.mcp.tool !== null) call.appendChild(el('div', 'tool ' + JSON.stringify(a.mcp.tool), 'field mcp-tool'));
        var args = a.mcp.arguments || {};
        Object.keys(args).forEach(function (k) { call.appendChild(el('div', k + ' = ' + JSON.stringify(args[k]), 'field mcp-arg')); });
        action.appendChild(call);
      }
      tr.appendChild(action);
      tr.appendChild(el('td', a.risk || '-', 'risk-' + (a.risk || 'none')));
      tr.appendChild(el('td', (a.policy_ids || []).join(', ')));
      var fields = el('td');
      var bf = a.body_fields || {};
      Object.keys(bf).forEach(function (k) { fields.appendChild(el('div', k + ' = ' + JSON.stringify(bf[k]), 'field')); });
      if (Object.keys(bf).length === 0) fields.appendChild(el('span', '-', 'muted'));
      tr.appendChild(fields);
      var w = el('td', waited(a.requested_at));
      w.className = 'waiting';
      w.dataset.since = a.requested_at;
      tr.appendChild(w);
      var decide = el('td');
      var approve = el('button', 'Approve', 'approve');
      approve.type = 'button';
      approve.addEventListener('click', function () { act('/approvals/' + encodeURIComponent(a.id) + '/approve', {}, 'approved ' + a.id); });
      var deny = el('button', 'Deny', 'deny');
      deny.type = 'button';
      deny.addEventListener('click', function () {
        var reason = window.prompt('Reason for denying (optional)') || undefined;
        act('/approvals/' + encodeURIComponent(a.id) + '/deny', { reason: reason }, 'denied ' + a.id);
      });
      var minutes = el('input', null, 'minutes');
      minutes.type = 'number'; minutes.min = '1'; minutes.value = '30';
      minutes.setAttribute('aria-label', 'grant minutes');
      var hostOnly = el('input');
      hostOnly.type = 'checkbox'; hostOnly.checked = true;
      var hostLabel = el('label');
      hostLabel.appendChild(hostOnly);
      hostLabel.appendChild(document.createTextNode(' this host only'));
      var grant = el('button', 'Grant', 'grant');
      grant.type = 'button';
      grant.title = 'Approve, and let this agent do ' + a.action_class + ' without asking for the given minutes';
      grant.addEventListener('click', function () {
        act('/approvals/' + encodeURIComponent(a.id) + '/approve',
          { grant_minutes: Number(minutes.value), grant_host: hostOnly.checked },
          'approved ' + a.id + ' with a ' + minutes.value + ' min grant');
      });
      decide.appendChild(approve);
      decide.appendChild(deny);
      decide.appendChild(el('br'));
      decide.appendChild(grant);
      decide.appendChild(minutes);
      decide.appendChild(document.createTextNode(' min '));
      decide.appendChild(hostLabel);
      tr.appendChild(decide);
      pendingBody.appendChild(tr);
    });
  }

  function renderGrants(grants) {
    grantsBody.textContent = '';
    grants.forEach(function (g) {
      var tr = el('tr');
      tr.dataset.grantId = g.id;
      tr.appendChild(el('td', g.agent_id));
      tr.appendChild(el('td', g.action_class));
      tr.appendChild(el('td', g.host === null ? 'any' : g.host));
      tr.appendChild(el('td', g.granted_by));
      tr.appendChild(el('td', new Date(g.expires_at).toLocaleTimeString()));
      tr.appendChild(el('td', g.uses));
      var td = el('td');
      var revoke = el('button', 'Revoke', 'deny');
      revoke.type = 'button';
      revoke.addEventListener('click', function () { act('/grants/' + encodeURIComponent(g.id) + '/revoke', {}, 'revoked ' + g.id); });
      td.appendChild(revoke);
      tr.appendChild(td);
      grantsBody.appendChild(tr);
    });
  }

  var inFlight = false;
  var again = false;
  function refresh() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    fetch('/approvals', { headers: { accept: 'application/json' } }).then(function (r) { return r.json(); }).then(function (j) {
      pending = j.pending || [];
      renderPending();
      renderGrants(j.grants || []);
    }, function () { live.textContent = 'sidecar unreachable'; }).then(function () {
      inFlight = false;
      if (again) { again = false; refresh(); }
    });
  }

  // Live updates: server-sent events, with polling as the fallback when the stream is down.
  var stream = null;
  function connect() {
    stream = new EventSource('/approvals/events');
    stream.addEventListener('change', refresh);
    stream.onopen = function () { live.textContent = 'live'; };
    stream.onerror = function () { live.textContent = 'reconnecting…'; };
  }
  connect();
  setInterval(function () { if (!stream || stream.readyState !== 1) refresh(); }, 5000);
  setInterval(function () {
    document.querySelectorAll('td.waiting').forEach(function (td) { td.textContent = waited(td.dataset.since); });
  }, 1000);
  refresh();
})();
`;
