//! Roles: what each kind of user may see and do through SQL, decided from the streams' own
//! definitions (their retention class and personal columns), so a new stream is placed by its
//! definition and needs no entry here.
//!
//! | role | reads | changes |
//! |---|---|---|
//! | `analyst` | every stream, table and rule | rules, the watchlist |
//! | `crowd_manager` | aggregates (density, the grid, camera health), tables without personal columns (zones), rules over aggregates | nothing |
//! | `data_team` | the same as crowd managers through SQL (personal data leaves only as pseudonymized exports) | nothing |
//! | `auditor` | the audit log (`audit_log`) only | nothing |
//! | `admin` | every stream, table and rule, not the audit log | rules, the watchlist |

use vigil_engine::stream::{Class, StreamInfo};

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Writes rules, manages the watchlist, reviews hits: sees plates.
    Analyst,
    /// Watches density and flows: aggregates only.
    CrowdManager,
    /// Studies patterns: aggregates through SQL, pseudonymized exports.
    DataTeam,
    /// Independent oversight: the audit log only.
    Auditor,
    /// Runs the service.
    Admin,
}

/// The names roles are written with.
pub const ROLES: [&str; 5] = ["analyst", "crowd_manager", "data_team", "auditor", "admin"];

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "analyst" => Role::Analyst,
            "crowd_manager" => Role::CrowdManager,
            "data_team" => Role::DataTeam,
            "auditor" => Role::Auditor,
            "admin" => Role::Admin,
            _ => return Err(format!("no role {s:?}; use one of {}", ROLES.join(", "))),
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = [Role::Analyst, Role::CrowdManager, Role::DataTeam, Role::Auditor, Role::Admin]
            .iter()
            .position(|r| r == self)
            .unwrap_or(0);
        f.write_str(ROLES[i])
    }
}

/// The name of the audit log as a table.
pub const AUDIT_TABLE: &str = "audit_log";

impl Role {
    /// May this role read rows of a stream or table of class `class` with personal columns
    /// `personal` (a rule: its class, and whether it reads personal data)?
    pub fn may_read(self, class: Class, has_personal: bool) -> bool {
        match self {
            Role::Analyst | Role::Admin => true,
            Role::CrowdManager | Role::DataTeam => {
                !has_personal && matches!(class, Class::Aggregate | Class::Reference)
            }
            Role::Auditor => false,
        }
    }

    /// [`Role::may_read`] for a stream or table.
    pub fn may_read_stream(self, info: &StreamInfo) -> bool {
        self.may_read(info.class, !info.personal.is_empty())
    }

    /// May this role read the audit log?
    pub fn may_read_audit(self) -> bool {
        self == Role::Auditor
    }

    /// May this role list and erase what is held about one data subject (`SHOW PLATE`,
    /// `ERASE PLATE`)? Admins and the auditors who oversee them.
    pub fn may_request_subject(self) -> bool {
        matches!(self, Role::Auditor | Role::Admin)
    }

    /// May this role create and drop rules, and change the watchlist?
    pub fn may_change(self) -> bool {
        matches!(self, Role::Analyst | Role::Admin)
    }

    /// What the role sees, for error messages.
    pub fn sees(self) -> &'static str {
        match self {
            Role::Analyst | Role::Admin => "every stream, table and rule",
            Role::CrowdManager | Role::DataTeam => "aggregates and tables without personal data",
            Role::Auditor => "the audit log (audit_log) only",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_by_class_and_personal_data() {
        for r in ROLES {
            let role: Role = r.parse().unwrap();
            assert_eq!(role.to_string(), r);
        }
        assert!("root".parse::<Role>().unwrap_err().contains("analyst, crowd_manager"));
        let cases = [
            // (role, class, personal, may read)
            (Role::CrowdManager, Class::Aggregate, false, true),
            (Role::CrowdManager, Class::Personal, true, false),
            (Role::CrowdManager, Class::Record, false, false),
            (Role::CrowdManager, Class::Reference, true, false),
            (Role::CrowdManager, Class::Reference, false, true),
            (Role::DataTeam, Class::Personal, true, false),
            (Role::Analyst, Class::Personal, true, true),
            (Role::Auditor, Class::Aggregate, false, false),
            (Role::Admin, Class::Personal, true, true),
        ];
        for (role, class, personal, ok) in cases {
            assert_eq!(role.may_read(class, personal), ok, "{role} {class:?} {personal}");
        }
        assert!(Role::Auditor.may_read_audit() && !Role::Admin.may_read_audit());
        assert!(
            Role::Analyst.may_change() && !Role::CrowdManager.may_change() && !Role::Auditor.may_change()
        );
    }
}
