//! Synthetic Live Stream hits: a pool of visitors whose sessions walk a small site.
//!
//! Every record carries the fields of Adobe's sample record (see livestream-api.md), with
//! the 64-bit ids as bare JSON numbers, mostly above 2^53. Some hits carry events and
//! products, some text is outside Latin-1, a few records carry unknown extra top-level
//! fields, and a few are preceded by an empty record. Everything is drawn from one
//! seeded [`Rng`], so the same seed gives the same records in the same order.

use crate::rng::{mix64, Rng};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// One generated hit, ready for the wire.
#[derive(Clone, Debug)]
pub struct Hit {
    /// Index of the visitor in the pool; decides which connection slot receives the hit.
    pub visitor: u32,
    /// The record as one line of JSON, without the CRLF.
    pub line: String,
    /// Whether an empty record (a bare CRLF) precedes this record on the wire.
    pub empty_before: bool,
}

struct Page {
    name: &'static str,
    path: &'static str,
    section: &'static str,
}

const PAGES: &[Page] = &[
    Page {
        name: "Home",
        path: "/",
        section: "Home",
    },
    Page {
        name: "Search Results",
        path: "/search",
        section: "Search",
    },
    Page {
        name: "Mens Shoes",
        path: "/c/mens-shoes",
        section: "Catalog",
    },
    Page {
        name: "Womens Shoes",
        path: "/c/womens-shoes",
        section: "Catalog",
    },
    Page {
        name: "Running",
        path: "/c/running",
        section: "Catalog",
    },
    Page {
        name: "Product: Trail Runner X",
        path: "/p/trail-runner-x",
        section: "Product",
    },
    Page {
        name: "Product: City Sneaker",
        path: "/p/city-sneaker",
        section: "Product",
    },
    Page {
        name: "Product: Summer Sandal",
        path: "/p/summer-sandal",
        section: "Product",
    },
    Page {
        name: "製品一覧",
        path: "/ja/products",
        section: "Catalog",
    },
    Page {
        name: "Обувь для бега",
        path: "/ru/running",
        section: "Catalog",
    },
    Page {
        name: "Cart",
        path: "/cart",
        section: "Checkout",
    },
    Page {
        name: "Checkout",
        path: "/checkout",
        section: "Checkout",
    },
    Page {
        name: "Order Confirmation",
        path: "/checkout/thanks",
        section: "Checkout",
    },
    Page {
        name: "Store Locator",
        path: "/stores",
        section: "Service",
    },
    Page {
        name: "Help: Returns",
        path: "/help/returns",
        section: "Service",
    },
];

const PRODUCT_PAGES: &[usize] = &[5, 6, 7];
const CART: usize = 10;
const CHECKOUT: usize = 11;
const CONFIRMATION: usize = 12;

const GEO: &[(&str, &str)] = &[
    ("usa", "new york"),
    ("usa", "san jose"),
    ("usa", "chicago"),
    ("fra", "paris"),
    ("deu", "berlin"),
    ("deu", "münchen"),
    ("gbr", "london"),
    ("jpn", "東京"),
    ("jpn", "大阪"),
    ("rus", "москва"),
    ("bra", "são paulo"),
    ("ind", "mumbai"),
    ("aus", "sydney"),
    ("che", "zürich"),
];

const BROWSERS: &[&str] = &[
    "Google Chrome 131.0",
    "Google Chrome 130.0",
    "Mozilla Firefox 133.0",
    "Apple Safari 18.1",
    "Microsoft Edge 131.0",
    "Samsung Internet 26.0",
];

const OSES: &[&str] = &[
    "Windows 10",
    "Windows 11",
    "Macintosh",
    "iOS 18.1",
    "Android 14",
    "Linux",
];

const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
    "https://t.co/abc123",
    "https://news.example.org/best-running-shoes",
    "",
];

const SEARCH_TERMS: &[&str] = &[
    "running shoes",
    "trail runner",
    "sandals",
    "ランニングシューズ",
    "кроссовки",
    "chaussures 👟",
];

const CAMPAIGNS: &[&str] = &[
    "DFA:172612:21725632:182361",
    "EM:winter-sale:2024",
    "SEM:brand:shoes",
    "SOC:insta:summer",
];

const PRODUCTS: &[(&str, &str, u64)] = &[
    ("Clothing", "Mens Black Running Shoes", 1799),
    ("Clothing", "Trail Runner X", 12999),
    ("Clothing", "City Sneaker", 8950),
    ("Clothing", "Summer Sandal", 3499),
    ("Accessories", "Performance Socks (3 pack)", 1299),
];

const BOTS: &[&str] = &["Googlebot", "bingbot", "AhrefsBot"];

#[derive(Clone, Debug)]
struct Visitor {
    vis_high: u64,
    vis_low: u64,
    mc_high: u64,
    mc_low: u64,
    ip: String,
    geo: usize,
    browser: usize,
    os: usize,
    bot: Option<usize>,
    page: Option<usize>,
    campaign: Option<usize>,
    cart: Vec<usize>,
}

/// The hit generator of one stream.
pub struct Generator {
    rng: Rng,
    report_suite: String,
    id_key: u64,
    next_hit: u64,
    visitors: Vec<Visitor>,
    active: Vec<usize>,
}

/// How many distinct visitors a stream's pool holds.
const POOL: usize = 400;
/// How many visitors are "on the site" at once (sessions in progress).
const ACTIVE: usize = 24;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    report_suite: &'a str,
    hit_id_high: u64,
    hit_id_low: u64,
    vis_id_high: u64,
    vis_id_low: u64,
    mc_vis_id_high: u64,
    mc_vis_id_low: u64,
    #[serde(rename = "timeGMT")]
    time_gmt: u64,
    #[serde(rename = "receivedTimeGMT")]
    received_time_gmt: u64,
    page_name: &'a str,
    #[serde(rename = "pageURL")]
    page_url: String,
    referrer: String,
    geo_country: &'a str,
    geo_city: &'a str,
    browser: &'a str,
    operating_system: &'a str,
    ip: &'a str,
    evars: Value,
    props: Value,
    events: Value,
    products: Vec<Value>,
    bot: &'a str,
    truncated: bool,
    vis_id_type: u32,
}

impl Generator {
    /// A generator for one stream; `rng` should be derived from the seed and stream name.
    pub fn new(mut rng: Rng, report_suite: &str) -> Generator {
        let id_key = rng.next_u64();
        let visitors = (0..POOL)
            .map(|_| {
                let ip = format!(
                    "{}.{}.{}.{}",
                    1 + rng.below(222),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                );
                Visitor {
                    vis_high: rng.adobe_id(),
                    vis_low: rng.adobe_id(),
                    mc_high: rng.adobe_id(),
                    mc_low: rng.adobe_id(),
                    ip,
                    geo: rng.index(GEO.len()),
                    browser: rng.index(BROWSERS.len()),
                    os: rng.index(OSES.len()),
                    bot: if rng.chance(0.03) {
                        Some(rng.index(BOTS.len()))
                    } else {
                        None
                    },
                    page: None,
                    campaign: None,
                    cart: Vec::new(),
                }
            })
            .collect();
        // The site is already busy when the stream starts: a full set of sessions.
        let mut active = Vec::with_capacity(ACTIVE);
        while active.len() < ACTIVE {
            let v = rng.index(POOL);
            if !active.contains(&v) {
                active.push(v);
            }
        }
        Generator {
            rng,
            report_suite: report_suite.to_string(),
            id_key,
            next_hit: 0,
            visitors,
            active,
        }
    }

    /// Generates the next hit, "collected" at Unix time `now_s` (seconds, fractional).
    pub fn next(&mut self, now_s: f64) -> Hit {
        let rng = &mut self.rng;
        // Choose a visitor: mostly one whose session is in progress, sometimes a new one.
        let vi = if self.active.len() < ACTIVE && (self.active.is_empty() || rng.chance(0.3)) {
            let v = rng.index(POOL);
            if !self.active.contains(&v) {
                self.active.push(v);
            }
            v
        } else {
            self.active[rng.index(self.active.len())]
        };
        let v = &mut self.visitors[vi];

        // Walk: the next page follows the current one.
        let prev = v.page;
        let next = match prev {
            None => {
                v.campaign = if rng.chance(0.3) {
                    Some(rng.index(CAMPAIGNS.len()))
                } else {
                    None
                };
                if rng.chance(0.5) {
                    0
                } else {
                    rng.index(PAGES.len() - 3)
                }
            }
            Some(p) if PRODUCT_PAGES.contains(&p) && rng.chance(0.35) => CART,
            Some(CART) if rng.chance(0.5) => CHECKOUT,
            Some(CHECKOUT) if rng.chance(0.6) => CONFIRMATION,
            Some(_) => match rng.below(10) {
                0..=3 => *rng.pick(PRODUCT_PAGES),
                4 => 1,
                _ => rng.index(PAGES.len() - 3),
            },
        };
        let page = &PAGES[next];
        let mut events = Map::new();
        let mut products = Vec::new();
        let mut props = Map::new();
        props.insert("prop1".into(), json!(page.section));
        if next == 1 {
            props.insert("prop2".into(), json!(*rng.pick(SEARCH_TERMS)));
        }
        let event = |count: u64, exponent: i32| json!([{"count": count, "exponent": exponent, "unique": ""}]);
        let product_json =
            |(cat, name, price): (&str, &str, u64), units: u64, with_revenue: bool| {
                json!({
                    "category": cat,
                    "name": name,
                    "revenue": if with_revenue { price * units } else { 0 },
                    "units": if with_revenue { units } else { 0 },
                    "evars": {},
                    "events": {},
                })
            };
        if PRODUCT_PAGES.contains(&next) {
            events.insert("prodView".into(), event(1, 0));
            let p = PRODUCTS[1 + (next - PRODUCT_PAGES[0]) % (PRODUCTS.len() - 1)];
            products.push(product_json(p, 0, false));
        }
        if next == CART {
            let p = rng.index(PRODUCTS.len());
            v.cart.push(p);
            events.insert("scAdd".into(), event(1, 0));
            products.push(product_json(PRODUCTS[p], 0, false));
        }
        if next == CONFIRMATION {
            if v.cart.is_empty() {
                v.cart.push(rng.index(PRODUCTS.len()));
            }
            events.insert("purchase".into(), event(1, 0));
            let mut revenue = 0;
            for &p in &v.cart {
                let units = 1 + rng.below(3);
                revenue += PRODUCTS[p].2 * units;
                products.push(product_json(PRODUCTS[p], units, true));
            }
            // A currency-valued custom event: 12.34 written as count 1234, exponent -2.
            events.insert("event1".into(), event(revenue, -2));
            v.cart.clear();
        }
        let mut evars = Map::new();
        if let Some(c) = v.campaign {
            evars.insert("campaign".into(), json!(CAMPAIGNS[c]));
        }
        if rng.chance(0.2) {
            evars.insert("eVar1".into(), json!("Summer Shoe Promo"));
        }

        let referrer = match prev {
            Some(p) => format!("https://shop.example.com{}", PAGES[p].path),
            None => (*rng.pick(REFERRERS)).to_string(),
        };
        let latency = rng.range_f64(20.0, 90.0);
        let time_gmt = (now_s - latency).max(0.0) as u64;
        let received = time_gmt + rng.below(3);
        let hit_high = rng.adobe_id();
        let hit_low = mix64(self.next_hit ^ self.id_key);
        self.next_hit += 1;
        let (country, city) = GEO[v.geo];
        let record = Record {
            report_suite: &self.report_suite,
            hit_id_high: hit_high,
            hit_id_low: hit_low,
            vis_id_high: v.vis_high,
            vis_id_low: v.vis_low,
            mc_vis_id_high: v.mc_high,
            mc_vis_id_low: v.mc_low,
            time_gmt,
            received_time_gmt: received,
            page_name: page.name,
            page_url: format!("https://shop.example.com{}", page.path),
            referrer,
            geo_country: country,
            geo_city: city,
            browser: BROWSERS[v.browser],
            operating_system: OSES[v.os],
            ip: &v.ip,
            evars: json!({ "evars": evars }),
            props: Value::Object(props),
            events: Value::Object(events),
            products,
            bot: v.bot.map_or("<Not a bot>", |b| BOTS[b]),
            truncated: false,
            vis_id_type: 3,
        };
        let mut line = serde_json::to_string(&record).expect("a record always serializes");
        // New fields appear over time in the real feed; clients must keep them.
        if rng.chance(0.05) {
            line.pop();
            line.push_str(
                r#","geoRegion":"ca","userAgentHints":{"mobile":false,"platform":"macOS"}}"#,
            );
        } else if rng.chance(0.02) {
            line.pop();
            line.push_str(r#","experimentalField":[1,2.5,null,"x"]}"#);
        }
        let empty_before = rng.chance(0.02);

        // Sessions end: the visitor leaves the active set after the confirmation or at random.
        v.page = Some(next);
        if next == CONFIRMATION || rng.chance(0.08) {
            v.page = None;
            self.active.retain(|&a| a != vi);
        }
        Hit {
            visitor: vi as u32,
            line,
            empty_before,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_with_exact_ids_and_unique_hit_ids() {
        let mut g = Generator::new(Rng::new(1), "examplecomprod");
        let mut ids = std::collections::HashSet::new();
        let mut big = 0;
        let mut non_latin1 = 0;
        let mut purchases = 0;
        for i in 0..2000 {
            let h = g.next(1_700_000_000.0 + f64::from(i));
            let v: Value = serde_json::from_str(&h.line).unwrap();
            let hi = v["hitIdHigh"].as_u64().unwrap();
            let lo = v["hitIdLow"].as_u64().unwrap();
            assert!(ids.insert((hi, lo)), "duplicate hit id");
            if hi > (1 << 53) {
                big += 1;
            }
            if h.line.chars().any(|c| c as u32 > 0xff) {
                non_latin1 += 1;
            }
            if v["events"].get("purchase").is_some() {
                purchases += 1;
            }
            for f in [
                "visIdHigh",
                "visIdLow",
                "mcVisIdHigh",
                "mcVisIdLow",
                "timeGMT",
            ] {
                assert!(v[f].is_u64(), "{f}");
            }
            assert_eq!(v["truncated"], false);
        }
        assert!(big > 1800, "{big}");
        assert!(non_latin1 > 10, "{non_latin1}");
        assert!(purchases > 5, "{purchases}");
    }

    #[test]
    fn deterministic() {
        let mut a = Generator::new(Rng::new(9), "rs");
        let mut b = Generator::new(Rng::new(9), "rs");
        for i in 0..100 {
            assert_eq!(a.next(f64::from(i)).line, b.next(f64::from(i)).line);
        }
    }
}
