// sprintpoints front page: plain JS, no build step. Talks to /api/v1/... on its own origin.
"use strict";

const $ = (sel) => document.querySelector(sel);

function newKey() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Accept: "application/json", ...(options.headers || {}) },
  });
  let body = {};
  try { body = await response.json(); } catch { body = {}; }
  if (!response.ok) {
    const message = (body.error && body.error.message) || `HTTP ${response.status}`;
    const error = new Error(message);
    error.code = body.error && body.error.code;
    error.status = response.status;
    throw error;
  }
  return body;
}

function show(el, text, ok) {
  el.textContent = text;
  el.className = ok ? "ok" : "error";
}

async function loadLeaderboard() {
  const tbody = $("#leaderboard tbody");
  try {
    const { leaders } = await api("/api/v1/leaderboard?limit=10");
    tbody.replaceChildren();
    if (!leaders.length) {
      const row = tbody.insertRow();
      const cell = row.insertCell();
      cell.colSpan = 4;
      cell.textContent = "No points earned yet.";
    }
    for (const leader of leaders) {
      const row = tbody.insertRow();
      for (const value of [leader.rank, leader.handle, leader.earned, leader.balance]) {
        row.insertCell().textContent = value;
      }
    }
  } catch (err) {
    tbody.replaceChildren();
    const cell = tbody.insertRow().insertCell();
    cell.colSpan = 4;
    cell.textContent = `Leaderboard unavailable: ${err.message}`;
  }
}

async function loadRewards() {
  const select = $("#redeem-sku");
  try {
    const { rewards } = await api("/api/v1/rewards");
    select.replaceChildren(...rewards.map((r) => {
      const option = document.createElement("option");
      option.value = r.sku;
      option.textContent = `${r.name} (${r.cost} points)`;
      return option;
    }));
  } catch (err) {
    show($("#redeem-result"), `Rewards unavailable: ${err.message}`, false);
  }
}

async function loadVersion() {
  try {
    const { version } = await api("/version");
    $("#version").textContent = `version ${version}`;
  } catch { /* the footer stays empty */ }
}

$("#balance-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const handle = $("#balance-handle").value.trim();
  const out = $("#balance-result");
  try {
    const body = await api(`/api/v1/balances/${encodeURIComponent(handle)}`);
    show(out, `${body.handle} has ${body.balance} points.`, true);
  } catch (err) {
    show(out, err.status === 404 ? `No user named ${handle}.` : err.message, false);
  }
});

// The signed-in user: handle and API token, in this tab's session storage only (never a
// cookie: nothing sends it but this page's own requests, and it is gone with the tab).
const SESSION_KEY = "sprintpoints.session";

function session() {
  try { return JSON.parse(sessionStorage.getItem(SESSION_KEY)); } catch { return null; }
}

function showSession() {
  const current = session();
  $("#signin-form").hidden = Boolean(current);
  $("#signed-in").hidden = !current;
  $("#signed-in-handle").textContent = current ? current.handle : "";
  $("#redeem-form button").disabled = !current;
  const out = $("#redeem-result");
  if (!current) {
    out.textContent = "Sign in to redeem your points.";
    out.className = "";
  } else if (out.textContent === "Sign in to redeem your points.") {
    out.textContent = "";
  }
}

function signOut(message) {
  sessionStorage.removeItem(SESSION_KEY);
  showSession();
  if (message) show($("#signin-result"), message, false);
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const handle = $("#signin-handle").value.trim();
  const token = $("#signin-token").value.trim();
  const out = $("#signin-result");
  try {
    // Only the user's own token shows their email: a token of someone else is refused here.
    const user = await api(`/api/v1/users/${encodeURIComponent(handle)}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    if (!("email" in user)) {
      show(out, `That token is not ${handle}'s.`, false);
      return;
    }
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ handle: user.handle, token }));
    $("#signin-token").value = "";
    show(out, "", true);
    showSession();
  } catch (err) {
    if (err.status === 401) show(out, "That token is not valid.", false);
    else if (err.status === 404) show(out, `No user named ${handle}.`, false);
    else show(out, err.message, false);
  }
});

$("#signout").addEventListener("click", () => {
  signOut();
  show($("#signin-result"), "Signed out.", true);
});

let pendingKey = null;  // reused if the same redemption is retried after a network error

$("#redeem-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const current = session();
  if (!current) return showSession();
  const form = event.target;
  const button = form.querySelector("button");
  const out = $("#redeem-result");
  const payload = {
    handle: current.handle,
    sku: $("#redeem-sku").value,
    quantity: Number($("#redeem-quantity").value),
  };
  pendingKey = pendingKey || newKey();
  button.disabled = true;
  try {
    const body = await api("/api/v1/redemptions", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "Idempotency-Key": pendingKey,
        Authorization: `Bearer ${current.token}`,
      },
      body: JSON.stringify(payload),
    });
    pendingKey = null;
    show(out, `Redeemed ${payload.quantity} × ${payload.sku} for ${body.points_spent} points. ` +
              `New balance: ${body.balance}.`, true);
    loadLeaderboard();
  } catch (err) {
    if (err.status) pendingKey = null;  // the server answered: a new attempt is a new request
    if (err.status === 401) {
      signOut("Your token is no longer valid (replaced?): sign in again.");
      return;
    }
    show(out, err.code === "insufficient_points" ? "Not enough points for that." : err.message, false);
  } finally {
    button.disabled = !session();
  }
});

showSession();
loadLeaderboard();
loadRewards();
loadVersion();
