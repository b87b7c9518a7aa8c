// The connect form: the package's option schema, localStorage, URL query parameters, and
// turning the form into LiveStream options.
//
// Defaults, ranges and meanings are not repeated here: they come from the package's
// `optionSchema()` (the core's one definition, also behind the README's option table) and
// become the inputs' placeholders ("default 60000"), min/max and tooltips. An empty field
// leaves the option out, so the client's own default applies.
//
// Credentials are remembered per origin of the stream URL, and only when the user ticks
// "Remember token and API key": a token saved for one server is never filled in for a URL of
// another origin, so a link such as `/?url=http://elsewhere/…&autoconnect=1` cannot make the
// page send it there.

const STORAGE_KEY = "livestream-wasm-demo:settings";
const CREDENTIALS_KEY = "livestream-wasm-demo:credentials";

/** Form fields, in the order of the options they become. */
export const FIELDS = [
  { key: "url", type: "string" },
  { key: "token", type: "string", secret: true },
  { key: "apiKey", type: "string", secret: true },
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

/**
 * The page's own starting values: where the stream is, and how this page talks to it.
 * `mode` is "relay" when the page is served by livestream-relay (its `/status` answered),
 * else "direct" (the emulator, or any static server). Everything else starts empty: the
 * client's defaults apply, and the placeholders say what they are.
 */
export function defaults(origin, mode = { kind: "direct" }) {
  if (mode.kind === "relay") {
    return {
      url: `${origin}${mode.streamPath || "/api/1/stream/demo"}`,
      // The relay holds Adobe's token; on loopback it needs none from the page.
      token: "",
      apiKey: "",
      // Allowed here: the relay never answers 409, only its own upstream is bound by KA-16598.
      reconnectDelayMs: "2000",
      remember: false,
    };
  }
  return {
    url: `${origin}/api/1/stream/demo`,
    // The emulator accepts any bearer token; this one is not a secret.
    token: "demo-token",
    apiKey: "",
    remember: false,
  };
}

function readJson(key) {
  try {
    const v = JSON.parse(localStorage.getItem(key) || "null");
    return v && typeof v === "object" && !Array.isArray(v) ? v : {};
  } catch {
    return {};
  }
}

function writeJson(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    /* storage full or disabled: settings are simply not remembered */
  }
}

/** The origin of a stream URL (relative URLs count as this page's), or null. */
export function originOf(url, base = globalThis.location?.href) {
  try {
    const u = new URL(url, base);
    return u.protocol === "http:" || u.protocol === "https:" ? u.origin : null;
  } catch {
    return null;
  }
}

/** The credentials remembered for exactly this origin, or null. */
export function credentialsFor(origin) {
  if (!origin) return null;
  const all = readJson(CREDENTIALS_KEY);
  const c = Object.hasOwn(all, origin) ? all[origin] : null;
  if (!c || typeof c !== "object") return null;
  return { token: typeof c.token === "string" ? c.token : "", apiKey: typeof c.apiKey === "string" ? c.apiKey : "" };
}

function rememberCredentials(origin, token, apiKey) {
  if (!origin) return;
  const all = readJson(CREDENTIALS_KEY);
  all[origin] = { token, apiKey };
  writeJson(CREDENTIALS_KEY, all);
}

export function forgetCredentials(origin) {
  const all = readJson(CREDENTIALS_KEY);
  if (origin && Object.hasOwn(all, origin)) {
    delete all[origin];
    writeJson(CREDENTIALS_KEY, all);
  }
}

/** Non-secret settings from storage. Older versions kept the API key (and maybe the token) here: dropped. */
function loadStored() {
  const stored = readJson(STORAGE_KEY);
  if ("token" in stored || "apiKey" in stored || "rememberToken" in stored) {
    delete stored.token;
    delete stored.apiKey;
    delete stored.rememberToken;
    writeJson(STORAGE_KEY, stored);
  }
  return stored;
}

/**
 * The initial form values: the page's defaults, then what this browser remembered, then the
 * URL's query parameters (`stream=NAME` is a shortcut for this server's URL of that stream).
 * The query never carries secrets (a link would put them in history and logs), and the
 * remembered credentials are filled in only for the origin they were saved for.
 * Returns the values, whether `?autoconnect=1` was given, and the origin the credentials came from.
 */
export function initialValues(loc, mode) {
  const base = defaults(loc.origin, mode);
  const values = { ...base };
  const stored = loadStored();
  for (const f of FIELDS) {
    if (!f.secret && f.key in stored && typeof stored[f.key] === (f.type === "bool" ? "boolean" : "string")) values[f.key] = stored[f.key];
  }

  const q = new URLSearchParams(loc.search);
  if (q.has("stream")) values.url = `${loc.origin}/api/1/stream/${encodeURIComponent(q.get("stream"))}`;
  for (const f of FIELDS) {
    if (f.secret || !q.has(f.key)) continue;
    const raw = q.get(f.key);
    values[f.key] = f.type === "bool" ? /^(1|true|yes|on)$/i.test(raw) : raw;
  }

  const origin = originOf(values.url, loc.href);
  const saved = credentialsFor(origin);
  if (saved) {
    values.token = saved.token;
    values.apiKey = saved.apiKey;
    values.remember = true;
  } else if (origin !== loc.origin) {
    // The page's default token belongs to the server that served the page, not to another.
    values.token = "";
    values.apiKey = "";
  }
  const autoconnect = /^(1|true|yes|on)$/i.test(q.get("autoconnect") || "");
  return { values, autoconnect, credentialsOrigin: saved ? origin : null };
}

export function writeForm(form, values, mode) {
  for (const f of FIELDS) {
    const el = form.elements.namedItem(f.key);
    if (!el) continue;
    if (f.type === "bool") el.checked = !!values[f.key];
    else el.value = values[f.key] ?? "";
  }
  form.elements.namedItem("remember").checked = !!values.remember;
  const base = defaults("", mode);
  if (ADVANCED.some((k) => String(values[k] ?? "") !== String(base[k] ?? ""))) {
    form.querySelector("#advanced").open = true;
  }
}

export function readForm(form) {
  const values = {};
  for (const f of FIELDS) {
    const el = form.elements.namedItem(f.key);
    values[f.key] = f.type === "bool" ? el.checked : el.value.trim();
  }
  values.remember = form.elements.namedItem("remember").checked;
  return values;
}

/**
 * Saves the settings; the token and API key only when "remember" is ticked, and then under
 * the origin of the stream URL. Unticked, whatever was remembered for that origin is forgotten.
 */
export function save(values) {
  const stored = {};
  for (const f of FIELDS) {
    if (!f.secret) stored[f.key] = values[f.key];
  }
  writeJson(STORAGE_KEY, stored);
  const origin = originOf(values.url);
  if (values.remember && (values.token || values.apiKey)) rememberCredentials(origin, values.token, values.apiKey);
  else forgetCredentials(origin);
}

/** Short text for a default in a placeholder: "default 60000", or null when it does not fit. */
function placeholderOf(spec) {
  const d = String(spec.default ?? "");
  if (/^\d+$/.test(d)) return `default ${d}`;
  const inner = /\((\d+)\)$/.exec(d); // "service default (270)"
  if (inner) return `default ${inner[1]}`;
  if (d === "maxConnections") return "default: max";
  const short = d.replace(/reconnectDelayMs/g, "delay");
  return short.length <= 26 ? `default ${short}` : "default";
}

const plain = (s) => String(s ?? "").replace(/`/g, "");

/**
 * Applies the package's option schema (`optionSchema()` from livestream-wasm) to the form:
 * min/max of numeric inputs, a placeholder with the default, and a tooltip with the meaning,
 * the default and what is allowed. Returns the specs by name (e.g. the default delay).
 */
export function applySchema(form, schema) {
  const specs = new Map((Array.isArray(schema) ? schema : []).map((s) => [s.name, s]));
  for (const f of FIELDS) {
    const spec = specs.get(f.key);
    const el = form.elements.namedItem(f.key);
    if (!spec || !el) continue;
    const tip = `${f.key}: ${plain(spec.meaning)}.\nDefault: ${plain(spec.default)}. Allowed: ${plain(spec.allowed)}.`;
    el.title = tip;
    el.closest("label")?.setAttribute("title", tip);
    if (f.type === "int") {
      if (Number.isFinite(spec.min)) el.min = String(spec.min);
      if (Number.isFinite(spec.max)) el.max = String(spec.max);
      el.placeholder = placeholderOf(spec);
    }
  }
  return specs;
}

/** The numeric default of an option from the schema (e.g. 60000 for reconnectDelayMs), or NaN. */
export function numericDefault(specs, name) {
  const d = specs?.get(name)?.default;
  return /^\d+$/.test(String(d ?? "")) ? Number(d) : NaN;
}

/**
 * LiveStream options from form values. Empty fields are left out so the client's defaults
 * apply. Numbers are passed as typed; their ranges are checked by the client, whose
 * constructor error names the option, the value and the allowed range.
 */
export function toOptions(values) {
  const o = { url: values.url };
  if (values.token) o.token = values.token;
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
