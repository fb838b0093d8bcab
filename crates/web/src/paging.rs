//! Page sizes of list endpoints: one rule for every service.
//!
//! A `limit` query parameter is optional (the service's default applies), must be at least 1,
//! and is capped (not refused) at the service's maximum, so a client asking for "everything"
//! gets the largest page and a cursor to the next one.

/// A service's page sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// The page size when the request gives no `limit`.
    pub default: u32,
    /// The largest page; a larger `limit` is capped to it.
    pub max: u32,
}

impl PageLimits {
    /// The page size for a requested `limit`, or the problem detail for a 400.
    pub fn resolve(&self, requested: Option<u64>) -> Result<u32, String> {
        match requested {
            None => Ok(self.default),
            Some(0) => Err("`limit` must be at least 1".into()),
            Some(limit) => Ok(u32::try_from(limit).unwrap_or(u32::MAX).min(self.max)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PageLimits = PageLimits {
        default: 50,
        max: 200,
    };

    #[test]
    fn default_when_absent_capped_when_too_large_refused_when_zero() {
        assert_eq!(LIMITS.resolve(None), Ok(50));
        assert_eq!(LIMITS.resolve(Some(1)), Ok(1));
        assert_eq!(LIMITS.resolve(Some(200)), Ok(200));
        assert_eq!(LIMITS.resolve(Some(201)), Ok(200));
        assert_eq!(LIMITS.resolve(Some(u64::MAX)), Ok(200));
        assert_eq!(
            LIMITS.resolve(Some(0)),
            Err("`limit` must be at least 1".into())
        );
    }
}
