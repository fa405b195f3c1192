//! The header values of a hit that change with time: `Cache-Control` (its `max-age` counts
//! down to the guarantee's end) and `Age` (counts up). A hit needs the same few values over and
//! over (every result of one kind shares them), so each is made once and cloned, not
//! formatted into a new allocation for every answer (about 700 instructions of a hit's
//! 17,000, by callgrind): `Age` from a table made at first use, `Cache-Control` from a small
//! memo per thread (no lock, no sharing between cores).

use std::cell::RefCell;
use std::sync::LazyLock;

use axum::http::HeaderValue;

/// Ages up to this many seconds come from the table (results live minutes, by default).
const TABLED_AGES: u64 = 4096;
/// `Cache-Control` values remembered per thread: room for a guarantee of minutes in each of
/// a few result kinds (their windows differ) without evicting each other often.
const MEMO_SLOTS: usize = 1024;

/// `Age: N`.
pub fn age(secs: u64) -> HeaderValue {
    static TABLE: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
        // One allocation, kept for the process's life; every value is a slice of it.
        let digits: &'static str = (0..TABLED_AGES).map(|n| n.to_string()).collect::<String>().leak();
        let mut start = 0;
        (0..TABLED_AGES)
            .map(|n| {
                let end = start + itoa::Buffer::new().format(n).len();
                let value = HeaderValue::from_static(&digits[start..end]);
                start = end;
                value
            })
            .collect()
    });
    match TABLE.get(secs as usize) {
        Some(value) => value.clone(),
        None => HeaderValue::from(secs),
    }
}

/// `public, max-age=N[, stale-while-revalidate=W]`.
pub fn cache_control(max_age: u64, stale_while_revalidate: Option<u64>) -> HeaderValue {
    type Key = (u64, Option<u64>);
    thread_local! {
        static MEMO: RefCell<Vec<Option<(Key, HeaderValue)>>> = RefCell::new(vec![None; MEMO_SLOTS]);
    }
    let key = (max_age, stale_while_revalidate);
    let slot = (max_age as usize).wrapping_add(stale_while_revalidate.map_or(0, |w| w as usize * 31)) % MEMO_SLOTS;
    MEMO.with_borrow_mut(|memo| match &memo[slot] {
        Some((seen, value)) if *seen == key => value.clone(),
        _ => {
            let value = format_cache_control(max_age, stale_while_revalidate);
            memo[slot] = Some((key, value.clone()));
            value
        }
    })
}

fn format_cache_control(max_age: u64, stale_while_revalidate: Option<u64>) -> HeaderValue {
    let mut value = String::with_capacity(56);
    value.push_str("public, max-age=");
    value.push_str(itoa::Buffer::new().format(max_age));
    if let Some(window) = stale_while_revalidate {
        value.push_str(", stale-while-revalidate=");
        value.push_str(itoa::Buffer::new().format(window));
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_the_same_from_the_table_and_past_it() {
        for secs in [0, 1, 9, 10, 99, 100, 4095, 4096, 86_400] {
            assert_eq!(age(secs), secs.to_string().as_str(), "{secs}");
        }
    }

    #[test]
    fn a_remembered_cache_control_is_the_one_asked_for() {
        // Keys that share a slot, asked in turn: each answer is its own.
        let asks = [(5, Some(60)), (5, None), (5 + MEMO_SLOTS as u64, None), (36, Some(59)), (5, Some(60))];
        for _ in 0..2 {
            for (max_age, window) in asks {
                let expected = match window {
                    Some(w) => format!("public, max-age={max_age}, stale-while-revalidate={w}"),
                    None => format!("public, max-age={max_age}"),
                };
                assert_eq!(cache_control(max_age, window), expected.as_str());
            }
        }
    }
}
