//! The ECB's euro foreign exchange reference rates, `eurofxref-daily.xml`: one `Cube` with a
//! `time` holding a `Cube currency='USD' rate='1.0876'` per currency, each rate the units of
//! that currency one euro buys.

use std::collections::BTreeMap;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use rust_decimal::Decimal;

use crate::domain::Currency;

/// One day's rates, as published: units of each currency per euro.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daily {
    /// The `time` of the day's `Cube` (`2026-11-30`), if given.
    pub date: Option<String>,
    pub per_euro: BTreeMap<Currency, Decimal>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("not XML: {0}")]
    Xml(String),
    #[error("rate {rate:?} of {currency} is not a positive decimal")]
    Rate { currency: String, rate: String },
    #[error("no rates in the document")]
    Empty,
}

/// Reads the document. Codes that are not ISO 4217 are skipped; a rate that is not a positive
/// decimal, or a document with none, is an error (so a broken file never replaces good rates).
pub fn parse(xml: &str) -> Result<Daily, Invalid> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut date, mut per_euro) = (None, BTreeMap::new());
    loop {
        match reader.read_event().map_err(|e| Invalid::Xml(e.to_string()))? {
            Event::Eof => break,
            Event::Start(cube) | Event::Empty(cube) if cube.local_name().as_ref() == "Cube" => {
                let (time, currency, rate) =
                    (attribute(&cube, "time")?, attribute(&cube, "currency")?, attribute(&cube, "rate")?);
                if let Some(time) = time {
                    date = Some(time);
                }
                let (Some(code), Some(rate)) = (currency, rate) else { continue };
                let Ok(currency) = Currency::parse(code.trim()) else {
                    tracing::debug!(%code, "ECB rate for a code that is not ISO 4217; skipped");
                    continue;
                };
                match rate.trim().parse::<Decimal>() {
                    Ok(units) if units > Decimal::ZERO => per_euro.insert(currency, units),
                    _ => return Err(Invalid::Rate { currency: code, rate }),
                };
            }
            _ => {}
        }
    }
    if per_euro.is_empty() {
        return Err(Invalid::Empty);
    }
    Ok(Daily { date, per_euro })
}

fn attribute(element: &BytesStart<'_>, name: &str) -> Result<Option<String>, Invalid> {
    for attribute in element.attributes() {
        let attribute = attribute.map_err(|e| Invalid::Xml(e.to_string()))?;
        if attribute.key.local_name().as_ref() == name {
            let value = attribute.normalized_value(XmlVersion::Implicit1_0).map_err(|e| Invalid::Xml(e.to_string()))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// A document in the ECB's format with `per_euro` (what the mock serves).
pub fn render(date: &str, per_euro: &[(&str, &str)]) -> String {
    let cubes: String =
        per_euro.iter().map(|(code, rate)| format!("\t\t\t<Cube currency='{code}' rate='{rate}'/>\n")).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <gesmes:Envelope xmlns:gesmes=\"http://www.gesmes.org/xml/2002-08-01\" xmlns=\"http://www.ecb.int/vocabulary/2002-08-01/eurofxref\">\n\
         \t<gesmes:subject>Reference rates</gesmes:subject>\n\
         \t<gesmes:Sender>\n\t\t<gesmes:name>European Central Bank</gesmes:name>\n\t</gesmes:Sender>\n\
         \t<Cube>\n\t\t<Cube time='{date}'>\n{cubes}\t\t</Cube>\n\t</Cube>\n\
         </gesmes:Envelope>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
	<gesmes:subject>Reference rates</gesmes:subject>
	<gesmes:Sender>
		<gesmes:name>European Central Bank</gesmes:name>
	</gesmes:Sender>
	<Cube>
		<Cube time='2026-11-30'>
			<Cube currency='USD' rate='1.0876'/>
			<Cube currency='JPY' rate='163.45'/>
			<Cube currency='GBP' rate='0.85540'/>
		</Cube>
	</Cube>
</gesmes:Envelope>"#;

    #[test]
    fn reads_the_published_format() {
        let daily = parse(PUBLISHED).unwrap();
        assert_eq!(daily.date.as_deref(), Some("2026-11-30"));
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(daily.per_euro.len(), 3);
        assert_eq!(daily.per_euro[&usd], "1.0876".parse().unwrap());
    }

    #[test]
    fn what_it_renders_reads_back() {
        let daily = parse(&render("2026-12-01", &[("USD", "1.25"), ("GBP", "0.8")])).unwrap();
        assert_eq!((daily.date.as_deref(), daily.per_euro.len()), (Some("2026-12-01"), 2));
    }

    #[test]
    fn refuses_broken_documents_and_skips_unknown_codes() {
        assert_eq!(parse("<html>Service Unavailable</html>"), Err(Invalid::Empty));
        assert!(matches!(parse("<Cube currency='USD' rate='1.0'><Cube"), Err(Invalid::Xml(_))));
        let bad_rate = parse("<Cube><Cube currency='USD' rate='n/a'/></Cube>");
        assert!(matches!(bad_rate, Err(Invalid::Rate { .. })));
        assert!(matches!(parse("<Cube><Cube currency='USD' rate='0'/></Cube>"), Err(Invalid::Rate { .. })));
        let odd = parse("<Cube><Cube currency='ZZZ' rate='2'/><Cube currency='USD' rate='1.1'/></Cube>").unwrap();
        assert_eq!(odd.per_euro.len(), 1);
    }
}
