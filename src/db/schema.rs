// Kept by hand: one schema for both backends (see diesel.toml). It must match migrations/sqlite and
// migrations/postgres, which the test suite checks by running every query on both.

diesel::table! {
    organizations (id) {
        id -> BigInt,
        slug -> Text,
        name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        organization_id -> BigInt,
        email -> Text,
        password_hash -> Text,
        role -> Text,
        created_at -> Timestamp,
        last_sign_in_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        organization_id -> BigInt,
        name -> Text,
        secret_hash -> Text,
        hint -> Text,
        created_by_user_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        replaced_by_key_id -> Nullable<BigInt>,
        revoked_at -> Nullable<Timestamp>,
        revoked_by_user_id -> Nullable<BigInt>,
        last_used_at -> Nullable<Timestamp>,
        last_used_ip -> Nullable<Text>,
        last_used_user_agent -> Nullable<Text>,
        rate_limit_per_minute -> Nullable<BigInt>,
    }
}

diesel::table! {
    api_key_usage (api_key_id, hour_start) {
        api_key_id -> BigInt,
        hour_start -> Timestamp,
        success_count -> BigInt,
        rejected_count -> BigInt,
        limited_count -> BigInt,
    }
}

diesel::table! {
    api_key_rate_windows (api_key_id, window_start) {
        api_key_id -> BigInt,
        window_start -> BigInt,
        used -> BigInt,
    }
}

diesel::table! {
    api_key_callers (api_key_id, hour_start, ip_address, user_agent, endpoint) {
        api_key_id -> BigInt,
        hour_start -> Timestamp,
        ip_address -> Text,
        user_agent -> Text,
        endpoint -> Text,
        calls -> BigInt,
    }
}

diesel::table! {
    enrollment_tokens (id) {
        id -> BigInt,
        organization_id -> BigInt,
        description -> Text,
        secret_hash -> Text,
        hint -> Text,
        created_by_user_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        machine_id -> Nullable<BigInt>,
        revoked_at -> Nullable<Timestamp>,
        revoked_by_user_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    machines (id) {
        id -> BigInt,
        organization_id -> BigInt,
        name -> Text,
        os_version -> Text,
        ip_address -> Text,
        capabilities -> Text,
        driver_version -> Text,
        credential_hash -> Text,
        enrollment_token_id -> Nullable<BigInt>,
        enrolled_at -> Timestamp,
        last_seen_at -> Nullable<Timestamp>,
        reported_status -> Text,
        current_run_id -> Nullable<BigInt>,
        removed_at -> Nullable<Timestamp>,
        removed_by_user_id -> Nullable<BigInt>,
        driver_started_at -> Nullable<Timestamp>,
        paused_at -> Nullable<Timestamp>,
        paused_by_user_id -> Nullable<BigInt>,
        priority -> Integer,
        idle_since -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// One row per live machine and capability, kept by triggers (migration 000020).
    machine_capabilities (organization_id, capability, name, machine_id) {
        organization_id -> BigInt,
        capability -> Text,
        name -> Text,
        machine_id -> BigInt,
    }
}

diesel::table! {
    runs (id) {
        id -> BigInt,
        public_id -> Text,
        organization_id -> BigInt,
        api_key_id -> Nullable<BigInt>,
        endpoint -> Text,
        parameters -> Text,
        requires -> Text,
        priority -> Integer,
        status -> Text,
        result -> Nullable<Text>,
        error_type -> Nullable<Text>,
        error_message -> Nullable<Text>,
        machine_id -> Nullable<BigInt>,
        attempts -> Integer,
        created_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        cancel_requested_at -> Nullable<Timestamp>,
        retried_from_run_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    run_attempts (id) {
        id -> BigInt,
        run_id -> BigInt,
        machine_id -> BigInt,
        started_at -> Timestamp,
        ended_at -> Nullable<Timestamp>,
        outcome -> Nullable<Text>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        organization_id -> Nullable<BigInt>,
        actor_user_id -> Nullable<BigInt>,
        actor -> Text,
        action -> Text,
        target_type -> Text,
        target_id -> Nullable<Text>,
        source_ip -> Nullable<Text>,
        details -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    invites (id) {
        id -> BigInt,
        organization_id -> BigInt,
        email -> Text,
        role -> Text,
        secret_hash -> Text,
        created_by_user_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        user_id -> Nullable<BigInt>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    server_settings (name) {
        name -> Text,
        value -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    sign_in_failures (subject) {
        subject -> Text,
        failures -> Integer,
        last_failed_at -> Timestamp,
    }
}

diesel::table! {
    sessions (id) {
        id -> BigInt,
        token_hash -> Text,
        user_id -> BigInt,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
        ip_address -> Nullable<Text>,
        user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    queue_counts (organization_id, requires) {
        organization_id -> BigInt,
        requires -> Text,
        queued -> BigInt,
        running -> BigInt,
    }
}

diesel::table! {
    queue_samples (organization_id, minute) {
        organization_id -> BigInt,
        minute -> Timestamp,
        queued -> BigInt,
    }
}

diesel::table! {
    run_waits (organization_id, minute) {
        organization_id -> BigInt,
        minute -> Timestamp,
        started -> BigInt,
        waited_ms -> BigInt,
    }
}

diesel::joinable!(users -> organizations (organization_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(api_keys -> organizations (organization_id));
diesel::joinable!(enrollment_tokens -> organizations (organization_id));
diesel::joinable!(machines -> organizations (organization_id));
diesel::joinable!(runs -> organizations (organization_id));
diesel::joinable!(run_attempts -> machines (machine_id));
diesel::joinable!(machine_capabilities -> machines (machine_id));

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    api_keys,
    api_key_usage,
    api_key_callers,
    api_key_rate_windows,
    enrollment_tokens,
    invites,
    machines,
    machine_capabilities,
    runs,
    run_attempts,
    audit_events,
    server_settings,
    queue_counts,
    queue_samples,
    sign_in_failures,
    sessions,
    run_waits,
);
