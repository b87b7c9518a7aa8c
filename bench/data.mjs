// The benchmark's data set: realistic Live Stream records from a seeded generator, the same
// bytes in Node and in a browser (plain ES module, no Node APIs).
//
// - ~1.2 KB per record on average, CRLF after each record;
// - ~0.5 % empty records (a bare CRLF) between records;
// - ~2 % of records with unknown extra top-level fields;
// - ~90 % of the 64-bit id fields above 2^53 (JSON.parse rounds those); hit ids come in runs
//   that share hitIdHigh with nearly consecutive hitIdLow (as a collection server hands them
//   out), so rounding also makes distinct ids collide;
// - ~10 % of records with text outside Latin-1 (Japanese, Cyrillic, emoji);
// - a few JSON escapes (\" \/ \u00e9).
//
// Counts are in hits (non-empty records); the empty records come on top.

const TWO32 = 4294967296;

/** mulberry32: a small, fast, seeded 32-bit generator. */
function rng32(seed) {
  let a = seed >>> 0;
  return function next() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0);
  };
}

const PAGES = [
  ["Home", "/", "Home"],
  ["Search Results", "/search", "Search"],
  ["Mens Shoes", "/c/mens-shoes", "Catalog"],
  ["Womens Shoes", "/c/womens-shoes", "Catalog"],
  ["Running", "/c/running", "Catalog"],
  ["Product: Trail Runner X", "/p/trail-runner-x", "Product"],
  ["Product: City Sneaker", "/p/city-sneaker", "Product"],
  ["Product: Summer Sandal \\\"Riviera\\\"", "/p/summer-sandal", "Product"],
  ["Cart", "/cart", "Checkout"],
  ["Checkout", "/checkout", "Checkout"],
  ["Order Confirmation", "/checkout/thanks", "Checkout"],
  ["Store Locator", "/stores", "Service"],
  ["Help: Returns", "/help/returns", "Service"],
  ["Caf\\u00e9 Collection", "/c/cafe", "Catalog"],
];
// Used for ~10 % of records: text beyond U+00FF.
const PAGES_INTL = [
  ["製品一覧", "/ja/products", "Catalog"],
  ["Обувь для бега", "/ru/running", "Catalog"],
  ["ランニングシューズ 👟", "/ja/running", "Catalog"],
  ["Корзина", "/ru/cart", "Checkout"],
];
const GEO = [
  ["usa", "new york", "ny", 501], ["usa", "san jose", "ca", 807], ["usa", "chicago", "il", 602],
  ["fra", "paris", "75", 0], ["deu", "berlin", "be", 0], ["deu", "münchen", "by", 0],
  ["gbr", "london", "eng", 0], ["bra", "são paulo", "sp", 0], ["ind", "mumbai", "mh", 0],
  ["aus", "sydney", "nsw", 0], ["che", "zürich", "zh", 0],
];
const GEO_INTL = [["jpn", "東京", "13", 0], ["jpn", "大阪", "27", 0], ["rus", "москва", "mow", 0]];
const BROWSERS = [
  ["Google Chrome 131.0", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"],
  ["Mozilla Firefox 133.0", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:133.0) Gecko/20100101 Firefox/133.0"],
  ["Apple Safari 18.1", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"],
  ["Microsoft Edge 131.0", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"],
  ["Samsung Internet 26.0", "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36"],
];
const OSES = ["Windows 10", "Windows 11", "Macintosh", "iOS 18.1", "Android 14", "Linux"];
const REFERRERS = [
  "https:\\/\\/www.google.com\\/", "https://www.bing.com/search?q=running+shoes&form=QBLH",
  "https://duckduckgo.com/", "https://t.co/abc123", "https://news.example.org/best-running-shoes-2024",
  "",
];
const SEARCH = ["running shoes", "trail runner", "sandals", "waterproof hiking boots size 44"];
const SEARCH_INTL = ["ランニングシューズ", "кроссовки", "chaussures 👟"];
const CAMPAIGNS = ["DFA:172612:21725632:182361", "EM:winter-sale:2024", "SEM:brand:shoes", "SOC:insta:summer"];
const PRODUCTS = [
  ["Clothing", "Mens Black Running Shoes", 1799], ["Clothing", "Trail Runner X", 12999],
  ["Clothing", "City Sneaker", 8950], ["Clothing", "Summer Sandal", 3499],
  ["Accessories", "Performance Socks (3 pack)", 1299],
];
const RESOLUTIONS = ["1920x1080", "2560x1440", "390x844", "1440x900", "412x915"];
const LANGS = ["en-US", "en-GB", "fr-FR", "de-DE", "pt-BR", "ja-JP", "ru-RU"];
const UNKNOWN = [
  `,"userAgentHints":{"mobile":false,"platform":"macOS","brands":["Chromium","Google Chrome"]}`,
  `,"experimentalField":[1,2.5,null,"x",{"nested":true}]`,
  `,"newDimension":"x-123","newMetric":12.75`,
];

/**
 * A seeded record generator. `next()` returns the next record's line (without CRLF), its
 * hit id as exact decimal strings, and whether an empty record precedes it.
 */
export function recordGenerator(seed = 1, profile = {}) {
  // profile.intl: share of visitors whose records carry non-Latin-1 text (default 0.1);
  // profile.pad: extra ASCII bytes per record in an unknown field (size profiles);
  // profile.small: a minimal record (ids, times, a page name), ~300 B.
  const intlShare = profile.intl ?? 0.1;
  const pad = profile.pad ? `,"padding":"${"p".repeat(profile.pad)}"` : "";
  const r = rng32(seed);
  const below = (n) => r() % n;
  const chance = (p) => r() < p * TWO32;
  const pick = (a) => a[r() % a.length];
  /** A random u64 as a BigInt: above 2^53 with probability 0.9. */
  const id = () => {
    const big = chance(0.9);
    const hi = big ? (0x200000 + below(0xffffffff - 0x200000)) : below(0x200000);
    return (BigInt(hi) << 32n) | BigInt(r());
  };
  // Visitors: a pool, ids fixed per visitor (each id field 90 % above 2^53).
  const visitors = [];
  for (let i = 0; i < 500; i++) {
    visitors.push({
      vh: id().toString(), vl: id().toString(), mh: id().toString(), ml: id().toString(),
      ip: `${1 + below(222)}.${below(256)}.${below(256)}.${1 + below(254)}`,
      intl: chance(intlShare), geo: below(GEO.length), geoIntl: below(GEO_INTL.length),
      browser: below(BROWSERS.length), os: below(OSES.length), res: pick(RESOLUTIONS),
      lang: pick(LANGS), bot: chance(0.02) ? "Googlebot" : "<Not a bot>",
    });
  }
  // Hit ids: runs of a few hundred hits sharing hitIdHigh, hitIdLow nearly consecutive.
  let runLeft = 0;
  let high = "";
  let low = 0n;
  let time = 1732860000;
  let hitNo = 0;

  function next() {
    if (runLeft === 0) {
      runLeft = 100 + below(900);
      high = id().toString();
      low = id();
    }
    runLeft--;
    low = (low + 1n + BigInt(below(3))) & 0xffffffffffffffffn;
    const hitIdLow = low.toString();
    const v = visitors[below(visitors.length)];
    const intl = v.intl; // ~10 % of records carry non-Latin-1 text
    const [pageName, path, section] = intl ? pick(PAGES_INTL) : pick(PAGES);
    const [country, city, region, dma] = intl ? GEO_INTL[v.geoIntl] : GEO[v.geo];
    const [browser, ua] = BROWSERS[v.browser];
    if (chance(0.3)) time += 1;
    const t = time - below(60);
    const received = t + below(3);
    const search = section === "Search" ? `,"prop2":"${intl ? pick(SEARCH_INTL) : pick(SEARCH)}"` : "";
    const campaign = chance(0.3) ? `"campaign":"${pick(CAMPAIGNS)}",` : "";
    const [cat, name, price] = pick(PRODUCTS);
    const units = 1 + below(3);
    const purchase = section === "Checkout" && chance(0.3);
    const events = purchase
      ? `{"purchase":[{"count":1,"exponent":0,"unique":""}],"event1":[{"count":${price * units},"exponent":-2,"unique":""}]}`
      : section === "Product"
        ? `{"prodView":[{"count":1,"exponent":0,"unique":""}]}`
        : "{}";
    const products = section === "Product" || purchase
      ? `[{"category":"${cat}","name":"${name}","revenue":${purchase ? price * units : 0},"units":${purchase ? units : 0},"evars":{"eVar10":"size-${38 + below(10)}"},"events":{}}]`
      : "[]";
    const unknown = (chance(0.02) ? pick(UNKNOWN) : "") + pad;
    if (profile.small) {
      hitNo++;
      const line = `{"hitIdHigh":${high},"hitIdLow":${hitIdLow},"visIdHigh":${v.vh},"visIdLow":${v.vl},` +
        `"timeGMT":${t},"receivedTimeGMT":${received},"pageName":"${pageName}","geoCountry":"${country}","geoCity":"${city}"${unknown}}`;
      return { line, hitIdHigh: high, hitIdLow, emptyBefore: chance(0.005) };
    }
    const line =
      `{"reportSuite":"examplecomprod","hitIdHigh":${high},"hitIdLow":${hitIdLow},` +
      `"visIdHigh":${v.vh},"visIdLow":${v.vl},"mcVisIdHigh":${v.mh},"mcVisIdLow":${v.ml},` +
      `"timeGMT":${t},"receivedTimeGMT":${received},"hitSource":1,"pageName":"${pageName}",` +
      `"pageURL":"https://shop.example.com${path}?utm_source=newsletter&utm_medium=email&ref=${hitNo % 9973}",` +
      `"referrer":"${pick(REFERRERS)}","pageType":"","linkType":"","linkName":"","linkURL":"",` +
      `"geoCountry":"${country}","geoCity":"${city}","geoRegion":"${region}","geoDMA":${dma},` +
      `"browser":"${browser}","userAgent":"${ua}","operatingSystem":"${OSES[v.os]}",` +
      `"resolution":"${v.res}","language":"${v.lang}","javaScriptEnabled":true,"cookiesEnabled":true,` +
      `"ip":"${v.ip}","visitNumber":${1 + below(20)},"visitPageNumber":${1 + below(30)},` +
      `"evars":{"evars":{${campaign}"eVar1":"Summer Shoe Promo","eVar5":"member-${below(4)}","eVar12":"${section.toLowerCase()}"}},` +
      `"props":{"prop1":"${section}"${search},"prop5":"v2.14.${below(10)}"},` +
      `"events":${events},"products":${products},` +
      `"bot":"${v.bot}","truncated":false,"visIdType":3,"mobileDevice":"${OSES[v.os] === "iOS 18.1" || OSES[v.os] === "Android 14" ? "Mobile Phone" : "Other"}"` +
      `${unknown}}`;
    hitNo++;
    return { line, hitIdHigh: high, hitIdLow, emptyBefore: chance(0.005) };
  }
  return { next };
}

/**
 * The whole data set in memory: `bytes` (UTF-8, CRLF records), and the truth of each hit's
 * id in delivery order (`hitIdHigh[i]`, `hitIdLow[i]`, exact decimal strings).
 */
export function generate(hits = 100_000, seed = 1, profile = {}) {
  const g = recordGenerator(seed, profile);
  const enc = new TextEncoder();
  const parts = [];
  let size = 0;
  let text = "";
  const hitIdHigh = new Array(hits);
  const hitIdLow = new Array(hits);
  let empties = 0;
  for (let i = 0; i < hits; i++) {
    const rec = g.next();
    if (rec.emptyBefore) { text += "\r\n"; empties++; }
    text += rec.line + "\r\n";
    hitIdHigh[i] = rec.hitIdHigh;
    hitIdLow[i] = rec.hitIdLow;
    if (text.length > 1 << 20) {
      const b = enc.encode(text);
      parts.push(b); size += b.length; text = "";
    }
  }
  if (text) { const b = enc.encode(text); parts.push(b); size += b.length; }
  const bytes = new Uint8Array(size);
  let o = 0;
  for (const p of parts) { bytes.set(p, o); o += p.length; }
  return { bytes, hitIdHigh, hitIdLow, hits, empties };
}

/**
 * The data generated on the fly, `chunkBytes` at a time (the soak: 1 M records never sit in
 * memory together). For speed, the record bodies cycle through a pool of 4 096 generated
 * records (already UTF-8) and only the hit ids are new: runs sharing hitIdHigh with nearly
 * consecutive hitIdLow, all distinct, so nothing is a duplicate. `pull()` returns the next
 * chunk, or null at the end; `counts.hits` / `counts.bytes` track what was produced.
 */
export function streamingSource(hits, seed = 1, chunkBytes = 64 * 1024) {
  const g = recordGenerator(seed);
  const enc = new TextEncoder();
  const POOL = 4096;
  const pool = [];
  for (let i = 0; i < POOL; i++) {
    const rec = g.next();
    // Split around the two hit id values (they follow `"hitIdHigh":` and `"hitIdLow":`).
    const a = rec.line.indexOf('"hitIdHigh":') + 12;
    const b = rec.line.indexOf(',"hitIdLow":');
    const c = rec.line.indexOf(",", b + 12);
    pool.push({
      pre: enc.encode((rec.emptyBefore ? "\r\n" : "") + rec.line.slice(0, a)),
      mid: enc.encode(rec.line.slice(b, b + 12)),
      post: enc.encode(rec.line.slice(c) + "\r\n"),
    });
  }
  const r = rng32(seed ^ 0x5eed);
  let runLeft = 0;
  let high = "";
  let low = 0n;
  let made = 0;
  const counts = { hits: 0, bytes: 0 };
  const buf = new Uint8Array(chunkBytes + 4096);
  let fill = 0;
  let carry = null; // bytes of a record that did not fit in the previous chunk
  const put = (bytes) => {
    buf.set(bytes, fill);
    fill += bytes.length;
  };
  const putAscii = (str) => {
    for (let i = 0; i < str.length; i++) buf[fill++] = str.charCodeAt(i);
  };
  function pull() {
    fill = 0;
    if (carry) {
      put(carry);
      carry = null;
    }
    while (fill < chunkBytes && made < hits) {
      if (runLeft === 0) {
        runLeft = 100 + (r() % 900);
        const hi = r() % 10 < 9 ? 0x200000 + (r() % 0xffc00000) : r() % 0x200000;
        high = ((BigInt(hi) << 32n) | BigInt(r())).toString();
        low = (BigInt(r()) << 32n) | BigInt(r());
      }
      runLeft--;
      low = (low + 1n + BigInt(r() % 3)) & 0xffffffffffffffffn;
      const t = pool[made % POOL];
      const start = fill;
      put(t.pre);
      putAscii(high);
      put(t.mid);
      putAscii(low.toString());
      put(t.post);
      made++;
      if (fill > chunkBytes) {
        // Keep chunks at `chunkBytes`: the overflow goes first into the next one.
        carry = buf.slice(chunkBytes, fill);
        fill = chunkBytes;
        if (start >= chunkBytes) break;
      }
    }
    counts.hits = made;
    if (fill === 0) return null;
    counts.bytes += fill;
    return buf.slice(0, fill);
  }
  return { pull, counts };
}

/** FNV-1a over the bytes (to check that Node and the browser generated the same data). */
export function fingerprint(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i += 7) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, "0") + ":" + bytes.length;
}
