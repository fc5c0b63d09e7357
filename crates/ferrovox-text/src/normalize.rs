//! English text normalization: numbers, ordinals, currency, percentages, dates, times and
//! common abbreviations spelled out, so a voice reads them the same whatever its phonemizer.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const SCALES: [&str; 5] = ["", "thousand", "million", "billion", "trillion"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Cardinal number in words: 1234 → "one thousand two hundred thirty-four".
pub fn cardinal(n: u64) -> String {
    if n < 20 {
        return ONES[n as usize].to_string();
    }
    if n < 100 {
        let (t, o) = (n / 10, n % 10);
        return if o == 0 {
            TENS[t as usize].to_string()
        } else {
            format!("{}-{}", TENS[t as usize], ONES[o as usize])
        };
    }
    if n < 1000 {
        let (h, rest) = (n / 100, n % 100);
        return if rest == 0 {
            format!("{} hundred", ONES[h as usize])
        } else {
            format!("{} hundred {}", ONES[h as usize], cardinal(rest))
        };
    }
    let mut groups = Vec::new();
    let mut m = n;
    while m > 0 {
        groups.push(m % 1000);
        m /= 1000;
    }
    if groups.len() > SCALES.len() {
        return digits(&n.to_string());
    }
    let mut words = Vec::new();
    for (i, &g) in groups.iter().enumerate().rev() {
        if g == 0 {
            continue;
        }
        words.push(if i == 0 {
            cardinal(g)
        } else {
            format!("{} {}", cardinal(g), SCALES[i])
        });
    }
    words.join(" ")
}

/// Ordinal in words: 21 → "twenty-first".
pub fn ordinal(n: u64) -> String {
    let words = cardinal(n);
    let (head, last) = match words.rfind(['-', ' ']) {
        Some(i) => (&words[..=i], &words[i + 1..]),
        None => ("", words.as_str()),
    };
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// Each digit in words: "07" → "zero seven".
fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| ONES[d as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A year read the usual way: 1999 → "nineteen ninety-nine", 2005 → "two thousand five".
pub fn year(y: u64) -> String {
    match y {
        2000..=2009 => cardinal(y),
        1000..=9999 if y % 100 == 0 => format!("{} hundred", cardinal(y / 100)),
        1000..=9999 if y % 100 < 10 => format!("{} oh {}", cardinal(y / 100), cardinal(y % 100)),
        1000..=9999 => format!("{} {}", cardinal(y / 100), cardinal(y % 100)),
        _ => cardinal(y),
    }
}

const ABBREVIATIONS: [(&str, &str); 16] = [
    ("Mr.", "Mister"),
    ("Mrs.", "Missus"),
    ("Ms.", "Miz"),
    ("Dr.", "Doctor"),
    ("Prof.", "Professor"),
    ("Jr.", "Junior"),
    ("Sr.", "Senior"),
    ("Mt.", "Mount"),
    ("vs.", "versus"),
    ("etc.", "et cetera"),
    ("e.g.", "for example"),
    ("i.e.", "that is"),
    ("approx.", "approximately"),
    ("No.", "number"),
    ("Ave.", "Avenue"),
    ("Blvd.", "Boulevard"),
];

/// A token: a run of digits (with `,` thousands and one `.` decimal part), or any other char.
fn number_at(chars: &[char], i: usize) -> Option<(String, usize)> {
    let mut j = i;
    let mut text = String::new();
    while j < chars.len() {
        let c = chars[j];
        if c.is_ascii_digit() {
            text.push(c);
        } else if (c == ',' || c == '.')
            && j + 1 < chars.len()
            && chars[j + 1].is_ascii_digit()
            && !text.is_empty()
            && !(c == '.' && text.contains('.'))
        {
            if c == ',' {
                // A thousands separator is followed by exactly three digits.
                let run = chars[j + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                if run != 3 {
                    break;
                }
            } else {
                text.push('.');
            }
        } else {
            break;
        }
        j += 1;
    }
    (!text.is_empty()).then_some((text, j))
}

fn read_number(text: &str) -> String {
    match text.split_once('.') {
        Some((int, frac)) => format!("{} point {}", read_integer(int), digits(frac)),
        None => read_integer(text),
    }
}

fn read_integer(int: &str) -> String {
    if int.len() > 1 && int.starts_with('0') {
        return digits(int);
    }
    int.parse::<u64>()
        .map(cardinal)
        .unwrap_or_else(|_| digits(int))
}

fn currency_name(symbol: char, amount_one: bool) -> Option<(&'static str, &'static str)> {
    Some(match (symbol, amount_one) {
        ('$', true) => ("dollar", "cent"),
        ('$', false) => ("dollars", "cents"),
        ('£', true) => ("pound", "penny"),
        ('£', false) => ("pounds", "pence"),
        ('€', true) => ("euro", "cent"),
        ('€', false) => ("euros", "cents"),
        ('¥', _) => ("yen", "sen"),
        _ => return None,
    })
}

fn read_currency(symbol: char, number: &str) -> String {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = int.parse().unwrap_or(0);
    let (unit, _) = currency_name(symbol, whole == 1).expect("known symbol");
    let mut out = format!("{} {unit}", read_integer(int));
    if frac.len() == 2 {
        let cents: u64 = frac.parse().unwrap_or(0);
        if cents > 0 {
            let (_, sub) = currency_name(symbol, cents == 1).expect("known symbol");
            let sub = if symbol == '$' || symbol == '€' {
                if cents == 1 {
                    "cent"
                } else {
                    "cents"
                }
            } else {
                sub
            };
            out = format!("{out} and {} {sub}", cardinal(cents));
        }
    } else if !frac.is_empty() {
        out = format!("{} point {} {unit}", read_integer(int), digits(frac));
    }
    out
}

/// Tries a date `M/D/YYYY` or ISO `YYYY-MM-DD` at `i`; returns the words and the end index.
fn date_at(chars: &[char], i: usize) -> Option<(String, usize)> {
    let rest: String = chars[i..chars.len().min(i + 10)].iter().collect();
    let take = |s: &str, sep: char| -> Option<Vec<u64>> {
        let parts: Vec<&str> = s.split(sep).collect();
        (parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())))
        .then(|| parts.iter().map(|p| p.parse().unwrap_or(0)).collect())
    };
    let end = |len: usize| {
        (i + len < chars.len() && chars[i + len].is_ascii_digit())
            .then_some(())
            .is_none()
    };
    for len in (8..=10).rev() {
        if rest.chars().count() < len || !end(len) {
            continue;
        }
        let s: String = rest.chars().take(len).collect();
        if let Some([m, d, y]) = take(&s, '/').as_deref().map(|v| [v[0], v[1], v[2]]) {
            if (1..=12).contains(&m) && (1..=31).contains(&d) && (1000..=9999).contains(&y) {
                return Some((
                    format!("{} {}, {}", MONTHS[m as usize - 1], ordinal(d), year(y)),
                    i + len,
                ));
            }
        }
        if let Some([y, m, d]) = take(&s, '-').as_deref().map(|v| [v[0], v[1], v[2]]) {
            if (1..=12).contains(&m)
                && (1..=31).contains(&d)
                && (1000..=9999).contains(&y)
                && len == 10
            {
                return Some((
                    format!("{} {}, {}", MONTHS[m as usize - 1], ordinal(d), year(y)),
                    i + len,
                ));
            }
        }
    }
    None
}

/// Tries a time `H:MM` at `i`.
fn time_at(chars: &[char], i: usize) -> Option<(String, usize)> {
    let h_len = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=2).contains(&h_len) || chars.get(i + h_len) != Some(&':') {
        return None;
    }
    let m: String = chars.get(i + h_len + 1..i + h_len + 3)?.iter().collect();
    if m.len() != 2
        || !m.chars().all(|c| c.is_ascii_digit())
        || chars.get(i + h_len + 3).is_some_and(|c| c.is_ascii_digit())
    {
        return None;
    }
    let h: u64 = chars[i..i + h_len]
        .iter()
        .collect::<String>()
        .parse()
        .ok()?;
    let min: u64 = m.parse().ok()?;
    if h > 23 || min > 59 {
        return None;
    }
    let words = match min {
        0 => format!("{} o'clock", cardinal(h)),
        1..=9 => format!("{} oh {}", cardinal(h), cardinal(min)),
        _ => format!("{} {}", cardinal(h), cardinal(min)),
    };
    Some((words, i + h_len + 3))
}

/// Spells out what a voice would otherwise misread. Text without digits, symbols or listed
/// abbreviations comes back unchanged.
pub fn normalize_english(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    let at_word_start = |i: usize| i == 0 || !chars[i - 1].is_alphanumeric();
    'outer: while i < chars.len() {
        let c = chars[i];
        if at_word_start(i) {
            for (abbr, full) in ABBREVIATIONS {
                let n = abbr.chars().count();
                if chars.len() >= i + n && chars[i..i + n].iter().copied().eq(abbr.chars()) {
                    out.push_str(full);
                    i += n;
                    continue 'outer;
                }
            }
        }
        if currency_name(c, false).is_some() {
            if let Some((number, end)) = chars
                .get(i + 1)
                .filter(|d| d.is_ascii_digit())
                .and_then(|_| number_at(&chars, i + 1))
            {
                out.push_str(&read_currency(c, &number));
                i = end;
                continue;
            }
        }
        if c.is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_digit()) {
            if let Some((words, end)) = date_at(&chars, i).or_else(|| time_at(&chars, i)) {
                out.push_str(&words);
                i = end;
                continue;
            }
            let (number, end) = number_at(&chars, i).expect("starts with a digit");
            let suffix: String = chars[end..chars.len().min(end + 2)]
                .iter()
                .collect::<String>()
                .to_lowercase();
            let next_alpha = chars.get(end + 2).is_some_and(|c| c.is_alphanumeric());
            if ["st", "nd", "rd", "th"].contains(&suffix.as_str())
                && !next_alpha
                && !number.contains('.')
            {
                out.push_str(&ordinal(number.parse().unwrap_or(0)));
                i = end + 2;
            } else if chars.get(end) == Some(&'%') {
                out.push_str(&read_number(&number));
                out.push_str(" percent");
                i = end + 1;
            } else if number.len() == 4
                && !number.contains('.')
                && (1100..=2099).contains(&number.parse::<u64>().unwrap_or(0))
                && !text.contains(&format!("{number},"))
            {
                out.push_str(&year(number.parse().unwrap_or(0)));
                i = end;
            } else {
                out.push_str(&read_number(&number));
                i = end;
            }
            continue;
        }
        match c {
            '&' => out.push_str(" and "),
            '%' => out.push_str(" percent"),
            '+' if chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) => out.push_str("plus "),
            _ => out.push(c),
        }
        i += 1;
    }
    let collapsed: Vec<&str> = out.split(' ').filter(|w| !w.is_empty()).collect();
    if out.contains("  ") || out.starts_with(' ') {
        collapsed.join(" ")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_words() {
        let cases = [
            (0, "zero"),
            (7, "seven"),
            (13, "thirteen"),
            (40, "forty"),
            (42, "forty-two"),
            (100, "one hundred"),
            (115, "one hundred fifteen"),
            (1000, "one thousand"),
            (1234, "one thousand two hundred thirty-four"),
            (1_000_001, "one million one"),
            (2_500_000, "two million five hundred thousand"),
        ];
        for (n, words) in cases {
            assert_eq!(cardinal(n), words, "{n}");
        }
        let ords = [
            (1, "first"),
            (2, "second"),
            (3, "third"),
            (12, "twelfth"),
            (21, "twenty-first"),
            (30, "thirtieth"),
            (100, "one hundredth"),
        ];
        for (n, words) in ords {
            assert_eq!(ordinal(n), words, "{n}");
        }
        assert_eq!(year(1999), "nineteen ninety-nine");
        assert_eq!(year(2005), "two thousand five");
        assert_eq!(year(1905), "nineteen oh five");
        assert_eq!(year(1900), "nineteen hundred");
        assert_eq!(year(2025), "twenty twenty-five");
    }

    #[test]
    fn the_normalization_table() {
        let cases = [
            ("I have 3 cats.", "I have three cats."),
            ("It costs $12.50 today.", "It costs twelve dollars and fifty cents today."),
            ("Only $1.01 left", "Only one dollar and one cent left"),
            ("£5 and €3", "five pounds and three euros"),
            ("Population: 1,234,567 people", "Population: one million two hundred thirty-four thousand five hundred sixty-seven people"),
            ("Pi is 3.14", "Pi is three point one four"),
            ("A 50% chance", "A fifty percent chance"),
            ("the 21st century", "the twenty-first century"),
            ("On 3/14/2025 we met", "On March fourteenth, twenty twenty-five we met"),
            ("Due 2024-02-29.", "Due February twenty-ninth, twenty twenty-four."),
            ("Meet at 10:30 sharp", "Meet at ten thirty sharp"),
            ("Wake at 7:05", "Wake at seven oh five"),
            ("At 9:00 exactly", "At nine o'clock exactly"),
            ("Dr. Smith and Mr. Jones", "Doctor Smith and Mister Jones"),
            ("cats vs. dogs, e.g. pets", "cats versus dogs, for example pets"),
            ("In 1999 it rained", "In nineteen ninety-nine it rained"),
            ("Call 007 now", "Call zero zero seven now"),
            ("Rock & roll", "Rock and roll"),
            ("No digits here.", "No digits here."),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_english(input), expected, "{input:?}");
        }
    }
}
