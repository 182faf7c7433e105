//! Paging of list endpoints: one default, one ceiling, one way to say where the next
//! page starts.

use super::error::ApiError;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// The page size asked for, or the default; refused outside 1..=1000.
pub fn limit(asked: Option<usize>) -> Result<usize, ApiError> {
    let limit = asked.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("limit {limit} is outside 1..={MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// Offset of the page after one of `len` items at `offset`, when more match.
pub fn next_offset(offset: usize, len: usize, total: usize) -> Option<usize> {
    (offset + len < total).then_some(offset + len)
}
