//! What an audit event says was done. The stored text is part of the data: rows written by earlier
//! versions must still read, so a variant's [`Action::as_str`] never changes once released.

/// One kind of audited change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    FirstAdminCreated,
    SignedIn,
    SignedOutSession,
    SignedOutOtherSessions,
    PasswordChanged,
    ApiKeyCreated,
    ApiKeyRolled,
    ApiKeyRevoked,
    ApiKeyRateLimitChanged,
    EnrollmentTokenCreated,
    EnrollmentTokenRevoked,
    MachineEnrolled,
    MachinePaused,
    MachineResumed,
    MachinePriorityChanged,
    MachineRenamed,
    MachineRemoved,
    MachinesCleanedUp,
    RunCancelled,
    RunRetried,
    MemberInvited,
    InviteRevoked,
    InviteAccepted,
    MemberRoleChanged,
    MemberRemoved,
}

impl Action {
    /// Every action, in the order the audit log's filter lists them (by what they are about).
    pub const ALL: [Action; 25] = [
        Action::FirstAdminCreated,
        Action::SignedIn,
        Action::SignedOutSession,
        Action::SignedOutOtherSessions,
        Action::PasswordChanged,
        Action::ApiKeyCreated,
        Action::ApiKeyRolled,
        Action::ApiKeyRevoked,
        Action::ApiKeyRateLimitChanged,
        Action::EnrollmentTokenCreated,
        Action::EnrollmentTokenRevoked,
        Action::MachineEnrolled,
        Action::MachinePaused,
        Action::MachineResumed,
        Action::MachinePriorityChanged,
        Action::MachineRenamed,
        Action::MachineRemoved,
        Action::MachinesCleanedUp,
        Action::RunCancelled,
        Action::RunRetried,
        Action::MemberInvited,
        Action::InviteRevoked,
        Action::InviteAccepted,
        Action::MemberRoleChanged,
        Action::MemberRemoved,
    ];

    /// The text stored in `audit_events.action` (and used in filter links and downloads).
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::FirstAdminCreated => "first_admin_created",
            Action::SignedIn => "signed_in",
            Action::SignedOutSession => "signed_out_session",
            Action::SignedOutOtherSessions => "signed_out_other_sessions",
            Action::PasswordChanged => "password_changed",
            Action::ApiKeyCreated => "api_key_created",
            Action::ApiKeyRolled => "api_key_rolled",
            Action::ApiKeyRevoked => "api_key_revoked",
            Action::ApiKeyRateLimitChanged => "api_key_rate_limit_changed",
            Action::EnrollmentTokenCreated => "enrollment_token_created",
            Action::EnrollmentTokenRevoked => "enrollment_token_revoked",
            Action::MachineEnrolled => "machine_enrolled",
            Action::MachinePaused => "machine_paused",
            Action::MachineResumed => "machine_resumed",
            Action::MachinePriorityChanged => "machine_priority_changed",
            Action::MachineRenamed => "machine_renamed",
            Action::MachineRemoved => "machine_removed",
            Action::MachinesCleanedUp => "machines_cleaned_up",
            Action::RunCancelled => "run_cancelled",
            Action::RunRetried => "run_retried",
            Action::MemberInvited => "member_invited",
            Action::InviteRevoked => "invite_revoked",
            Action::InviteAccepted => "invite_accepted",
            Action::MemberRoleChanged => "member_role_changed",
            Action::MemberRemoved => "member_removed",
        }
    }

    /// What the audit log shows.
    pub const fn label(self) -> &'static str {
        match self {
            Action::FirstAdminCreated => "First admin created",
            Action::SignedIn => "Signed in",
            Action::SignedOutSession => "Signed out a session",
            Action::SignedOutOtherSessions => "Signed out other sessions",
            Action::PasswordChanged => "Password changed",
            Action::ApiKeyCreated => "API key created",
            Action::ApiKeyRolled => "API key rolled",
            Action::ApiKeyRevoked => "API key revoked",
            Action::ApiKeyRateLimitChanged => "API key rate limit changed",
            Action::EnrollmentTokenCreated => "Enrollment token created",
            Action::EnrollmentTokenRevoked => "Enrollment token revoked",
            Action::MachineEnrolled => "Machine enrolled",
            Action::MachinePaused => "Machine paused",
            Action::MachineResumed => "Machine resumed",
            Action::MachinePriorityChanged => "Machine priority changed",
            Action::MachineRenamed => "Machine renamed",
            Action::MachineRemoved => "Machine removed",
            Action::MachinesCleanedUp => "Machines cleaned up",
            Action::RunCancelled => "Run cancelled",
            Action::RunRetried => "Run retried",
            Action::MemberInvited => "Member invited",
            Action::InviteRevoked => "Invite revoked",
            Action::InviteAccepted => "Invite accepted",
            Action::MemberRoleChanged => "Member role changed",
            Action::MemberRemoved => "Member removed",
        }
    }

    /// The action stored as `text`, if it is one this version knows.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == text)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_action_reads_back_from_its_stored_text() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
        let stored: HashSet<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        let labels: HashSet<&str> = Action::ALL.iter().map(|a| a.label()).collect();
        assert_eq!(stored.len(), Action::ALL.len(), "stored texts are unique");
        assert_eq!(labels.len(), Action::ALL.len(), "labels are unique");
    }

    #[test]
    fn the_texts_rows_were_written_with_still_read() {
        // Written by releases before the enum: these rows exist in databases today.
        for (text, action) in [
            ("first_admin_created", Action::FirstAdminCreated),
            ("signed_in", Action::SignedIn),
            ("signed_out_session", Action::SignedOutSession),
            ("signed_out_other_sessions", Action::SignedOutOtherSessions),
            ("password_changed", Action::PasswordChanged),
            ("api_key_created", Action::ApiKeyCreated),
            ("api_key_rolled", Action::ApiKeyRolled),
            ("api_key_revoked", Action::ApiKeyRevoked),
            ("enrollment_token_created", Action::EnrollmentTokenCreated),
            ("enrollment_token_revoked", Action::EnrollmentTokenRevoked),
            ("machine_enrolled", Action::MachineEnrolled),
            ("machine_paused", Action::MachinePaused),
            ("machine_resumed", Action::MachineResumed),
            ("machine_removed", Action::MachineRemoved),
            ("run_cancelled", Action::RunCancelled),
            ("run_retried", Action::RunRetried),
        ] {
            assert_eq!(Action::parse(text), Some(action), "{text}");
        }
        assert_eq!(Action::ApiKeyRevoked.label(), "API key revoked");
    }

    #[test]
    fn unknown_text_is_no_action() {
        assert_eq!(Action::parse(""), None);
        assert_eq!(Action::parse("API key revoked"), None);
        assert_eq!(Action::parse("api_key_revoked\0"), None);
    }
}
