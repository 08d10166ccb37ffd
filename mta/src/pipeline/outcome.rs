//! From the groups' verdicts to the one reply the client gets.
//!
//! After DATA there is one reply for the whole message, so: any group that tempfails makes the
//! whole message tempfail (nothing is committed, so the client's retry duplicates nothing);
//! 5xx only when every group rejects; otherwise 250, and the rejected groups' recipients are
//! reported to the sender in a delivery status notification.

use crate::smtp::reply::Reply;

use super::{Group, GroupVerdict};

/// What becomes of the message.
#[derive(Debug)]
pub enum Disposal {
    /// Commit nothing; reply this (the groups say who decided, for the timeline).
    Refuse(Reply, Vec<Group>),
    /// Reply 250 once every group is durable (queued, quarantined) or dropped.
    Take(Vec<Group>),
}

impl Disposal {
    pub fn of(groups: Vec<Group>) -> Disposal {
        let tempfail = groups.iter().find_map(|g| match &g.verdict {
            Some(GroupVerdict::Tempfail(reply)) => Some(reply.clone()),
            _ => None,
        });
        if let Some(reply) = tempfail {
            return Disposal::Refuse(reply, groups);
        }
        let mut rejects = groups.iter().map(|g| match &g.verdict {
            Some(GroupVerdict::Reject(reply)) => Some(reply.clone()),
            _ => None,
        });
        let first = rejects.next().flatten();
        if let Some(first) = first {
            if rejects.all(|r| r.is_some()) {
                return Disposal::Refuse(first, groups);
            }
        }
        Disposal::Take(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(recipients: Vec<usize>, verdict: Option<GroupVerdict>) -> Group {
        let mut g = Group {
            recipients,
            verdict: None,
            modifications: Vec::new(),
            copies: Vec::new(),
            archives: Vec::new(),
            hold_original: None,
            findings: Default::default(),
            decided_by: None,
            reason: None,
            score: None,
            steps: Vec::new(),
        };
        g.verdict = verdict;
        g
    }

    fn reject() -> Option<GroupVerdict> {
        Some(GroupVerdict::Reject(Reply::new(550, "5.7.1 no")))
    }

    #[test]
    fn reject_only_when_every_group_rejects() {
        match Disposal::of(vec![group(vec![0], reject()), group(vec![1], reject())]) {
            Disposal::Refuse(reply, _) => assert_eq!(reply.code, 550),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Disposal::of(vec![group(vec![0], reject()), group(vec![1], None)]),
            Disposal::Take(_)
        ));
    }

    #[test]
    fn any_tempfail_tempfails_the_message() {
        let tempfail = Some(GroupVerdict::Tempfail(Reply::new(451, "4.7.1 later")));
        match Disposal::of(vec![group(vec![0], None), group(vec![1], tempfail)]) {
            Disposal::Refuse(reply, _) => assert_eq!(reply.code, 451),
            other => panic!("{other:?}"),
        }
    }
}
