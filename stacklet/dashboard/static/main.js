// The dashboard's entry point: log in and out, the pages (one <section> each, chosen by the
// URL's #fragment), and the topology graph, polled every few seconds while it is on screen.

import {isAdmin, login, logout, session, stillValid, whenExpired} from "./api.js";
import {drawTopology} from "./graph.js";
import {GRAPH, load, settling, state} from "./model.js";
import {$, act, busy, clearError, formValues, showError, showStatus} from "./ui.js";
import * as networks from "./networks.js";
import * as routers from "./routers.js";
import * as secgroups from "./secgroups.js";
import * as floatingips from "./floatingips.js";
import * as instances from "./instances.js";
import * as trace from "./trace.js";

const POLL_MS = 3000;
const PAGES = {
  topology: null, networks, routers, "security-groups": secgroups, "floating-ips": floatingips,
  instances, trace,
};
const GRAPH_PAGES = new Set(["topology", "trace"]);
let drawn = "";           // what the graph shows, to draw only when it changes
let poller = null;

function currentPage() {
  const name = location.hash.slice(1);
  return name in PAGES ? name : "topology";
}

function signature() {
  // what the graph draws of the servers: not their every field (updated, progress…)
  const servers = state.servers.map((v) => [v.id, v.name, v.status, v["OS-EXT-SRV-ATTR:host"]]);
  const pick = ({networks, subnets, routers, ports, floatingips}) =>
    JSON.stringify([networks, subnets, routers, ports, floatingips, servers]);
  return pick(state);
}

function drawGraph() {
  const now = signature();
  if (now === drawn) return;
  drawn = now;
  drawTopology($("topology-svg"), state);
  trace.redraw();
  $("topology-updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
}

function renderPage() {
  const page = PAGES[currentPage()];
  if (page) page.render();
  drawGraph();
}

// Loads everything and draws the page in view (after an action, on navigation).
// The page is aria-busy meanwhile (its tables are about to be drawn again).
function refresh() {
  return busy(async () => {
    try {
      await load();
      renderPage();
    } catch (err) {
      showError(err);
    }
  });
}

let serversShown = "";

// The instances page follows servers in transition (BUILD, deleting…) until they settle; its
// table is drawn again only when they changed.
async function pollInstances() {
  if (!state.servers.some(settling)) return;
  await load(["servers", "ports", "floatingips"]);
  const now = JSON.stringify(state.servers);
  if (now !== serversShown) {
    serversShown = now;
    instances.render();
  }
}

async function poll() {
  if (document.hidden || !session()) return;
  if (currentPage() === "instances") {
    await pollInstances().catch((err) => {
      if (err.status !== 401) showStatus(`Instances update failed: ${err.message}`);
    });
    return;
  }
  if (!GRAPH_PAGES.has(currentPage())) return;
  try {
    await load(GRAPH);
    drawGraph();
  } catch (err) {
    if (err.status !== 401) showStatus(`Topology update failed: ${err.message}`);
  }
}

function showPage() {
  const name = currentPage();
  for (const section of document.querySelectorAll("[data-page]")) {
    section.hidden = section.dataset.page !== name;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // one graph, shown on the topology and the trace pages
  if (GRAPH_PAGES.has(name)) $(`graph-slot-${name}`).append($("graph"));
  if (session()) refresh();
}

function enter() {
  const current = session();
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("whoami").textContent = `${current.user.name} in project ${current.project.name}` +
    `${isAdmin() ? " (admin)" : ""}`;
  $("whoami").hidden = false;
  $("logout").hidden = false;
  drawn = "";
  showPage();
  if (!poller) poller = setInterval(poll, POLL_MS);
}

function leave(message) {
  if (poller) clearInterval(poller);
  poller = null;
  $("app-view").hidden = true;
  $("whoami").hidden = true;
  $("logout").hidden = true;
  $("login-view").hidden = false;
  showStatus(message || "");
  $("login-username").focus();
}

function setup() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(event.currentTarget);
    const current = await act(`Log in as ${v.username}`, () => login(v));
    if (current) {
      $("login-password").value = "";
      enter();
    }
  });
  $("logout").addEventListener("click", async () => {
    clearError();
    await logout();
    leave("Logged out.");
  });
  whenExpired(() => leave("The session ended (token expired or revoked): log in again."));
  window.addEventListener("hashchange", () => {
    clearError();
    showPage();
  });
  $("topology-refresh").addEventListener("click", () => refresh());
  for (const page of Object.values(PAGES)) if (page) page.setup(refresh);
}

async function start() {
  setup();
  if (await stillValid()) enter();
  else leave();
}

start();
