// The APIs on this origin, called with the Keystone token kept in sessionStorage (per tab,
// gone when the tab closes). Errors become ApiError with the service's own message.

const KEY = "stacklet.session";
const RETRIES = 3;      // tries of a GET that the network cut

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const neutron = body && body.NeutronError;
    const keystone = body && body.error;
    // Nova's faults: {"badRequest": {"code": 400, "message": …}}
    const [novaType, nova] = body && typeof body === "object" && Object.keys(body).length === 1
      && !neutron && !keystone ? Object.entries(body)[0] : ["", null];
    const novaMessage = nova && typeof nova === "object" ? nova.message : "";
    const message = (neutron && neutron.message) || (keystone && keystone.message) ||
      novaMessage || fallback || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.type = (neutron && neutron.type) || (keystone && keystone.title) ||
      (novaMessage ? novaType : "");
  }
}

let onExpired = () => {};

export function whenExpired(fn) {
  onExpired = fn;
}

export function session() {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  try {
    return JSON.parse(raw);
  } catch {
    return null;
  }
}

async function request(method, path, body, token, extra = {}) {
  const headers = {Accept: "application/json", ...extra};
  if (token) headers["X-Auth-Token"] = token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const init = {method, headers, cache: "no-store", credentials: "omit",
                body: body === undefined ? undefined : JSON.stringify(body)};
  let response;
  for (let attempt = 1; ; attempt++) {
    try {
      response = await fetch(path, init);
      break;
    } catch (err) {
      // a read cut by the network (Chromium cuts what is in flight when the machine's
      // interfaces change: ERR_NETWORK_CHANGED) is asked again, and so is a log in (asking
      // for a token twice only issues two); any other write is not repeated
      const repeatable = method === "GET" || (method === "POST" && path.endsWith("/auth/tokens"));
      if (!repeatable || attempt >= RETRIES) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
    }
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data, response.statusText);
  return {data, headers: response.headers};
}

// An authenticated call; a 401 means the token is gone (expired or revoked): back to log in.
export async function api(method, path, body, headers = {}) {
  const current = session();
  if (!current) throw new ApiError(401, null, "Not logged in.");
  try {
    return (await request(method, path, body, current.token, headers)).data;
  } catch (err) {
    if (err.status === 401) {
      sessionStorage.removeItem(KEY);
      onExpired(err);
    }
    throw err;
  }
}

export async function login({username, password, project, domain}) {
  const body = {auth: {
    identity: {methods: ["password"], password: {user: {
      name: username, password, domain: {name: domain}}}},
    scope: {project: {name: project, domain: {name: domain}}},
  }};
  const {data, headers} = await request("POST", "/identity/v3/auth/tokens", body);
  const token = headers.get("X-Subject-Token");
  if (!token) throw new ApiError(500, null, "The identity service returned no token.");
  const info = data.token;
  const current = {
    token,
    expires_at: info.expires_at,
    user: {id: info.user.id, name: info.user.name},
    project: {id: info.project.id, name: info.project.name},
    roles: (info.roles || []).map((role) => role.name),
  };
  sessionStorage.setItem(KEY, JSON.stringify(current));
  return current;
}

// Revokes the token (DELETE /v3/auth/tokens) and forgets it, even if the revocation fails.
export async function logout() {
  const current = session();
  sessionStorage.removeItem(KEY);
  if (!current) return;
  await request("DELETE", "/identity/v3/auth/tokens", undefined, current.token,
                {"X-Subject-Token": current.token}).catch(() => {});
}

// Is the stored token still valid? (a reload keeps the tab's session)
export async function stillValid() {
  const current = session();
  if (!current) return false;
  try {
    await request("GET", "/identity/v3/auth/tokens", undefined, current.token,
                  {"X-Subject-Token": current.token});
    return true;
  } catch {
    sessionStorage.removeItem(KEY);
    return false;
  }
}

export function isAdmin() {
  const current = session();
  return Boolean(current && current.roles.includes("admin"));
}

export const neutron = (path) => `/networking/v2.0/${path}`;

// The Compute API at the microversion whose shapes the pages read (flavor embedded: 2.47).
export const NOVA_VERSION = "2.61";
export const nova = (path) => `/compute/v2.1/${path}`;

export function novaApi(method, path, body) {
  return api(method, nova(path), body, {"OpenStack-API-Version": `compute ${NOVA_VERSION}`});
}
