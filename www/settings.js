// The connect form: defaults, localStorage, URL query parameters, and turning the form
// into LiveStream options. The token is stored only when the user ticks "remember token".

const STORAGE_KEY = "livestream-wasm-demo:settings";

/** Form fields, in the order of the options they become. */
export const FIELDS = [
  { key: "url", type: "string" },
  { key: "token", type: "string", secret: true },
  { key: "apiKey", type: "string" },
  { key: "maxConnections", type: "int" },
  { key: "connections", type: "int" },
  { key: "smoothing", type: "bool" },
  { key: "smoothingBucketSize", type: "int" },
  { key: "reset", type: "string" },
  { key: "reconnectDelayMs", type: "int" },
  { key: "reconnectJitterMs", type: "int" },
  { key: "maxReconnectDelayMs", type: "int" },
  { key: "idleTimeoutMs", type: "int" },
];

const ADVANCED = ["reconnectDelayMs", "reconnectJitterMs", "maxReconnectDelayMs", "idleTimeoutMs"];

export function defaults(origin) {
  return {
    url: `${origin}/api/1/stream/demo`,
    token: "demo-token",
    apiKey: "",
    maxConnections: "1",
    connections: "",
    smoothing: false,
    smoothingBucketSize: "",
    reset: "",
    reconnectDelayMs: "60000",
    reconnectJitterMs: "",
    maxReconnectDelayMs: "",
    idleTimeoutMs: "",
    rememberToken: false,
  };
}

function loadStored() {
  try {
    const v = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    return v && typeof v === "object" ? v : {};
  } catch {
    return {};
  }
}

/**
 * The initial form values: defaults, then what this browser remembered, then the URL's
 * query parameters (`stream=NAME` is a shortcut for the emulator URL of that stream).
 * Returns the values and whether `?autoconnect=1` was given.
 */
export function initialValues(loc) {
  const values = { ...defaults(loc.origin) };
  const stored = loadStored();
  for (const f of FIELDS) {
    if (f.key in stored && !(f.secret && !stored.rememberToken)) values[f.key] = stored[f.key];
  }
  values.rememberToken = !!stored.rememberToken;

  const q = new URLSearchParams(loc.search);
  if (q.has("stream")) values.url = `${loc.origin}/api/1/stream/${encodeURIComponent(q.get("stream"))}`;
  for (const f of FIELDS) {
    if (!q.has(f.key)) continue;
    const raw = q.get(f.key);
    values[f.key] = f.type === "bool" ? /^(1|true|yes|on)$/i.test(raw) : raw;
  }
  const autoconnect = /^(1|true|yes|on)$/i.test(q.get("autoconnect") || "");
  return { values, autoconnect };
}

export function writeForm(form, values) {
  for (const f of FIELDS) {
    const el = form.elements.namedItem(f.key);
    if (!el) continue;
    if (f.type === "bool") el.checked = !!values[f.key];
    else el.value = values[f.key] ?? "";
  }
  form.elements.namedItem("rememberToken").checked = !!values.rememberToken;
  if (ADVANCED.some((k) => String(values[k] ?? "") !== String(defaults("")[k] ?? ""))) {
    form.querySelector("#advanced").open = true;
  }
}

export function readForm(form) {
  const values = {};
  for (const f of FIELDS) {
    const el = form.elements.namedItem(f.key);
    values[f.key] = f.type === "bool" ? el.checked : el.value.trim();
  }
  values.rememberToken = form.elements.namedItem("rememberToken").checked;
  return values;
}

export function save(values) {
  const stored = {};
  for (const f of FIELDS) {
    if (f.secret && !values.rememberToken) continue;
    stored[f.key] = values[f.key];
  }
  stored.rememberToken = !!values.rememberToken;
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(stored));
  } catch {
    /* storage full or disabled: settings are simply not remembered */
  }
}

/**
 * LiveStream options from form values. Empty fields are left out so the client's defaults
 * apply. Numbers are passed as typed; their ranges are checked by the client, whose
 * constructor error names the option, the value and the allowed range.
 */
export function toOptions(values) {
  const o = { url: values.url, token: values.token };
  if (values.apiKey) o.apiKey = values.apiKey;
  for (const f of FIELDS) {
    if (f.type !== "int") continue;
    if (f.key === "smoothingBucketSize" && !values.smoothing) continue; // only with smoothing
    const raw = values[f.key];
    if (raw === "" || raw == null) continue;
    const n = Number(raw);
    if (!Number.isFinite(n)) throw new Error(`${f.key} must be a number, got "${raw}"`);
    o[f.key] = n;
  }
  if (values.smoothing) o.smoothing = true;
  if (values.reset) o.reset = values.reset;
  return o;
}
