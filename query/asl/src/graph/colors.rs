//! Line colors as Atlas picks them: palettes (named, `hash:` by legend, or a list), named
//! colors per theme, alpha.

use crate::words::style::parse_hex_color;
use argus_chart::Theme;

const ARMYTAGE: &[u32] = &[
    0x0075DC, 0x993F00, 0x9DCC00, 0x4C005C, 0x00998F, 0xFFA405, 0x5EF1F2, 0xF0A3FF, 0x94FFB5,
    0xFF0010, 0x2BCE48, 0x740AFF, 0x191919, 0xFF5005, 0x005C31, 0xFFCC99, 0x808080, 0x8F7C00,
    0xC20088, 0x003380, 0xFFA8BB, 0x426600, 0x990000, 0xFFE100,
];
const LIGHT24: &[u32] = &[
    0x00B5F7, 0xE48F72, 0x86CE00, 0xD626FF, 0x479B55, 0xFF9616, 0x0DF9FF, 0xEEA6FB, 0x22FFA7,
    0xFD3216, 0x00FE35, 0x7E7DCD, 0x6E899C, 0xFC6955, 0xC9FBE5, 0xB68E00, 0xDC587D, 0xFED4C4,
    0xFE00CE, 0x6A76FC, 0xFF0092, 0xE3EE9E, 0xBC7196, 0xF6F926,
];
const DARK24: &[u32] = &[
    0x2E91E5, 0x862A16, 0x1CA71C, 0x750D86, 0x00A08B, 0xEB663B, 0x511CFB, 0xDA60CA, 0x6C7C32,
    0xFB0D0D, 0x0D2A63, 0xA777F1, 0x222A2A, 0xE15F99, 0x778AAE, 0xB2828D, 0xDA16FF, 0x620042,
    0xFC0080, 0x1616A7, 0xFB00D1, 0x6C4516, 0xAF0038, 0xB68100,
];
const REDS: &[u32] = &[
    0x67000D, 0xA50F15, 0xCB181D, 0xEF3B2C, 0xFB6A4A, 0xFC9272, 0xFCBBA1,
];
const BLUES: &[u32] = &[
    0x08306B, 0x08519C, 0x2171B5, 0x4292C6, 0x6BAED6, 0x9ECAE1, 0xC6DBEF,
];
const GREENS: &[u32] = &[
    0x00441B, 0x006D2C, 0x238B45, 0x41AB5D, 0x74C476, 0xA1D99B, 0xC7E9C0,
];
const ORANGES: &[u32] = &[
    0x7F2704, 0xA63603, 0xD94801, 0xF16913, 0xFD8D3C, 0xFDAE6B, 0xFDD0A2,
];
const PURPLES: &[u32] = &[
    0x3F007D, 0x54278F, 0x6A51A3, 0x807DBA, 0x9E9AC8, 0xBCBDDC, 0xDADAEB,
];
const HIGHCHARTS: &[u32] = &[
    0x4572A7, 0xAA4643, 0x89A54E, 0x80699B, 0x3D96AE, 0xDB843D, 0x92A8CD, 0xA47D7C, 0xB5CA92,
];
/// These two carry their own alpha (ARGB).
const BW: &[u32] = &[
    0xC0000000, 0xC0CCCCCC, 0xC0444444, 0xC0EEEEEE, 0xC0222222, 0xC0AAAAAA, 0xC0666666, 0xC0888888,
];
const LIGHTGRAY: &[u32] = &[
    0xFFFFFFFF, 0xFF777777, 0xFFEEEEEE, 0xFF888888, 0xFFDDDDDD, 0xFF999999, 0xFFCCCCCC, 0xFFAAAAAA,
];

/// A named palette's colors as ARGB.
fn named(name: &str) -> Option<Vec<u32>> {
    let (colors, has_alpha) = match name {
        "armytage" => (ARMYTAGE, false),
        "light24" => (LIGHT24, false),
        "dark24" => (DARK24, false),
        "reds" => (REDS, false),
        "blues" => (BLUES, false),
        "greens" => (GREENS, false),
        "oranges" => (ORANGES, false),
        "purples" => (PURPLES, false),
        "highcharts" => (HIGHCHARTS, false),
        "bw" => (BW, true),
        "lightgray" => (LIGHTGRAY, true),
        _ => return None,
    };
    Some(
        colors
            .iter()
            .map(|&c| if has_alpha { c } else { 0xff00_0000 | c })
            .collect(),
    )
}

/// A palette: colors in order, and whether colors are chosen by the legend's hash.
#[derive(Clone, Debug)]
pub(crate) struct Palette {
    colors: Vec<u32>,
    by_hash: bool,
    next: usize,
}

impl Palette {
    /// From a `palette` value: a name, `hash:<name>`, or `(,c1,c2,)`.
    pub(crate) fn parse(desc: &str) -> Result<Palette, String> {
        if let Some(list) = desc.strip_prefix('(') {
            let colors = list
                .trim_end_matches(')')
                .split(',')
                .filter(|c| !c.is_empty())
                .map(|c| parse_hex_color(c).ok_or_else(|| format!("invalid color '{c}'")))
                .collect::<Result<Vec<_>, _>>()?;
            if colors.is_empty() {
                return Err("empty palette".into());
            }
            return Ok(Palette {
                colors,
                by_hash: false,
                next: 0,
            });
        }
        let (name, by_hash) = match desc.strip_prefix("hash:") {
            Some(n) => (n, true),
            None => (desc, false),
        };
        let colors = named(name).ok_or_else(|| format!("invalid palette name: '{name}'"))?;
        Ok(Palette {
            colors,
            by_hash,
            next: 0,
        })
    }

    pub(crate) fn for_theme(theme: Theme, offset: bool) -> Palette {
        let name = match (theme, offset) {
            (Theme::Light, false) => "armytage",
            (Theme::Light, true) => "bw",
            (Theme::Dark, false) => "light24",
            (Theme::Dark, true) => "lightgray",
        };
        Palette::parse(name).unwrap_or(Palette {
            colors: vec![0xff00_0000],
            by_hash: false,
            next: 0,
        })
    }

    /// The color of the next line, whose legend is `label`.
    pub(crate) fn next(&mut self, label: &str) -> u32 {
        let n = self.colors.len().max(1);
        if self.by_hash {
            // Java's String.hashCode, as Atlas, so a legend keeps its color across graphs.
            let h = label
                .encode_utf16()
                .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
            return self.colors[(h.unsigned_abs() as usize) % n];
        }
        let c = self.colors[self.next % n];
        self.next += 1;
        c
    }
}

pub(crate) fn check_palette(desc: &str) -> Result<(), String> {
    Palette::parse(desc).map(|_| ())
}

/// A `:color` setting: 8-digit ARGB hex or a named color, resolved for the theme.
pub(crate) fn resolve_color(value: &str, theme: Theme) -> Option<u32> {
    if let Some(c) = parse_hex_color(value) {
        return Some(c);
    }
    let (light, dark) = match value {
        "blue1" => (0x6BAED6, 0xC6DBEF),
        "blue2" => (0x2171B5, 0x6BAED6),
        "blue3" => (0x08306B, 0x2171B5),
        "gray1" => (0x888888, 0xFFFFFF),
        "gray2" => (0x444444, 0xBBBBBB),
        "gray3" => (0x000000, 0x777777),
        "green1" => (0x74C476, 0xC7E9C0),
        "green2" => (0x238B45, 0x74C476),
        "green3" => (0x00441B, 0x238B45),
        "orange1" => (0xFD8D3C, 0xFDD0A2),
        "orange2" => (0xD94801, 0xFD8D3C),
        "orange3" => (0x7F2704, 0xD94801),
        "purple1" => (0x9E9AC8, 0xDADAEB),
        "purple2" => (0x6A51A3, 0x9E9AC8),
        "purple3" => (0x3F007D, 0x6A51A3),
        "red1" => (0xFB6A4A, 0xFCBBA1),
        "red2" => (0xCB181D, 0xFB6A4A),
        "red3" => (0x67000D, 0xCB181D),
        _ => return None,
    };
    Some(
        0xff00_0000
            | match theme {
                Theme::Light => light,
                Theme::Dark => dark,
            },
    )
}

/// Replaces a color's alpha.
pub(crate) fn with_alpha(argb: u32, alpha: u8) -> u32 {
    (argb & 0x00ff_ffff) | (u32::from(alpha) << 24)
}
