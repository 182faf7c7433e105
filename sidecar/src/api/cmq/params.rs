//! A CMQ request's parameters (query string or form body) and typed access to them,
//! refusing with CMQ's codes.

use std::collections::BTreeMap;

use super::error::CmqError;

#[derive(Debug, Clone, Default)]
pub struct Params(pub BTreeMap<String, String>);

impl Params {
    pub fn parse(encoded: &[u8]) -> Result<Self, CmqError> {
        let mut map = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(encoded) {
            if map.insert(name.to_string(), value.to_string()).is_some() {
                return Err(CmqError::param(format!("parameter {name} is given twice")));
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, CmqError> {
        self.get(name)
            .ok_or_else(|| CmqError::new(4000, 10010, format!("parameter {name} is missing")))
    }

    /// An optional integer within `min..=max`.
    pub fn number<T>(&self, name: &str, (min, max): (T, T)) -> Result<Option<T>, CmqError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text.trim().parse::<T>() {
            Ok(value) if value >= min && value <= max => Ok(Some(value)),
            _ => Err(CmqError::param(format!(
                "{name} must be an integer in {min}..={max}, not {text:?}"
            ))),
        }
    }

    /// The values of `name.N`, in index order; the indexes must be contiguous from 0
    /// or 1 (CMQ's 10380 otherwise). At most `max` values.
    pub fn list(&self, name: &str, max: usize) -> Result<Vec<String>, CmqError> {
        let prefix = format!("{name}.");
        let mut indexed: Vec<(usize, &String)> = Vec::new();
        for (key, value) in &self.0 {
            let Some(index) = key.strip_prefix(&prefix) else {
                continue;
            };
            let index = index.parse::<usize>().map_err(|_| {
                CmqError::new(4000, 10380, format!("{key} has no number after {prefix}"))
            })?;
            indexed.push((index, value));
        }
        indexed.sort();
        let first = indexed.first().map_or(0, |(i, _)| *i);
        let contiguous = first <= 1
            && indexed
                .iter()
                .enumerate()
                .all(|(n, (index, _))| *index == first + n);
        if !contiguous {
            return Err(CmqError::new(
                4000,
                10380,
                format!("the indexes of {name}.N must be contiguous from 0 or 1"),
            ));
        }
        if indexed.len() > max {
            return Err(CmqError::new(
                4470,
                10300,
                format!("{} {name} values given, at most {max}", indexed.len()),
            ));
        }
        Ok(indexed.into_iter().map(|(_, v)| v.clone()).collect())
    }

    /// CMQ's listing: the names containing `searchWord`, then `offset` and `limit`
    /// (default and ceiling given); with the number that match.
    pub fn page(
        &self,
        names: impl IntoIterator<Item = String>,
        (default, max): (usize, usize),
    ) -> Result<(usize, Vec<String>), CmqError> {
        let search = self.get("searchWord").unwrap_or_default();
        let offset = self.number("offset", (0, usize::MAX))?.unwrap_or(0);
        let limit = self.number("limit", (0, max))?.unwrap_or(default);
        let matching: Vec<String> = names.into_iter().filter(|n| n.contains(search)).collect();
        let total = matching.len();
        Ok((
            total,
            matching.into_iter().skip(offset).take(limit).collect(),
        ))
    }
}
