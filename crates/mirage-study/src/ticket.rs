//! Tickets: the server's proof that it showed a pair.
//!
//! Every pair the server serves carries a fresh ticket of 128 random bits from the
//! operating system's generator. A vote must present one; the database marks it used
//! in the same transaction that records the vote, so a ticket counts at most once,
//! and a vote cannot name conditions or images the server did not show (the ticket,
//! not the request, says which condition was on which side).

use rand::rngs::OsRng;
use rand::RngCore;

/// Hex characters in a ticket (128 bits).
pub const TICKET_HEX_LEN: usize = 32;

/// A new random ticket, as lowercase hex.
pub fn new_ticket() -> String {
    let mut bytes = [0u8; TICKET_HEX_LEN / 2];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a string has a ticket's shape. Checked before any database lookup so that
/// junk never reaches SQL and error messages can tell "malformed" from "unknown".
pub fn well_formed(ticket: &str) -> bool {
    ticket.len() == TICKET_HEX_LEN
        && ticket
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a presented ticket does not allow a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketRefusal {
    /// Not one the server issued (forged, or for another study).
    Unknown,
    /// Already used for a vote (a replay or a double submit).
    Used,
    /// Issued longer ago than the server's ticket lifetime.
    Expired,
}

impl TicketRefusal {
    pub fn message(self) -> &'static str {
        match self {
            TicketRefusal::Unknown => {
                "unknown ticket: votes need a ticket issued with a pair by this study"
            }
            TicketRefusal::Used => "this ticket has already been used for a vote",
            TicketRefusal::Expired => "this ticket has expired; load a new pair",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_well_formed_and_distinct() {
        let tickets: std::collections::HashSet<String> = (0..1000).map(|_| new_ticket()).collect();
        assert_eq!(tickets.len(), 1000);
        assert!(tickets.iter().all(|t| well_formed(t)));
    }

    #[test]
    fn malformed_tickets_are_recognised() {
        let good = new_ticket();
        assert!(well_formed(&good));
        for bad in [
            String::new(),
            good[1..].to_string(),
            format!("{good}0"),
            good.to_uppercase()
                .replace(|c: char| c.is_ascii_digit(), "A"),
            format!("{}g", &good[1..]),
            "' OR 1=1 --".to_string(),
        ] {
            assert!(!well_formed(&bad), "{bad:?}");
        }
    }
}
