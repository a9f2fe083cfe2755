//! Tests of `login`.

use super::*;

const D: Deadlines = Deadlines {
    starting: Duration::from_secs(10),
    qr: Duration::from_secs(300),
    authenticating: Duration::from_secs(120),
};

fn qr(t: &str) -> PageView {
    PageView {
        qr: Some(t.into()),
        ..Default::default()
    }
}

#[test]
fn a_scan_leads_to_ready_only_once_the_phone_is_readable() {
    let t0 = Instant::now();
    let mut m = LoginMachine::start(t0, D);
    let (t, a) = m.observe(&qr("r1"), t0);
    assert_eq!(t.unwrap().to, LoginState::QrPending);
    assert_eq!(a, Action::StoreQr("r1".into()));
    // Rotation stores the new token; the same token is not stored twice.
    assert_eq!(m.observe(&qr("r1"), t0).1, Action::Wait);
    assert_eq!(m.observe(&qr("r2"), t0).1, Action::StoreQr("r2".into()));
    let loading = PageView {
        loading: true,
        ..Default::default()
    };
    assert_eq!(
        m.observe(&loading, t0).0.unwrap().to,
        LoginState::Authenticating
    );
    // Main screen without a readable number is not ready (the seed's bug).
    let main = PageView {
        main: true,
        ..Default::default()
    };
    assert_eq!(m.observe(&main, t0), (None, Action::Wait));
    let ready = PageView {
        main: true,
        phone: Some("447700900123".into()),
        ..Default::default()
    };
    let (t, a) = m.observe(&ready, t0);
    assert_eq!(t.unwrap().to, LoginState::Ready);
    assert_eq!(a, Action::Stop);
    assert!(m.is_final());
}

#[test]
fn every_transient_state_moves_on_at_its_deadline() {
    let t0 = Instant::now();
    let blank = PageView::default();
    let mut m = LoginMachine::start(t0, D);
    assert_eq!(m.observe(&blank, t0 + D.starting / 2).0, None);
    let (t, a) = m.observe(&blank, t0 + D.starting);
    assert_eq!(t.unwrap().to, LoginState::Failed);
    assert_eq!(a, Action::Stop);

    let mut m = LoginMachine::start(t0, D);
    m.observe(&qr("r1"), t0);
    let t = m.observe(&qr("r1"), t0 + D.qr).0.unwrap();
    assert_eq!(
        (t.to, t.reason.contains("no scan")),
        (LoginState::Inactive, true)
    );

    let mut m = LoginMachine::start(t0, D);
    let loading = PageView {
        loading: true,
        ..Default::default()
    };
    m.observe(&loading, t0);
    let t = m.observe(&loading, t0 + D.authenticating).0.unwrap();
    assert_eq!(t.to, LoginState::Failed);
    assert!(t.reason.contains("not ready"), "{}", t.reason);
}

#[test]
fn no_sequence_of_views_keeps_a_transient_state_past_its_deadline() {
    // Whatever the page shows (short of ready/faults), the machine is final
    // after the sum of the deadlines.
    let views = [
        PageView::default(),
        qr("a"),
        qr("b"),
        PageView {
            loading: true,
            ..Default::default()
        },
        PageView {
            main: true,
            ..Default::default()
        },
    ];
    let t0 = Instant::now();
    for start in 0..views.len() {
        let mut m = LoginMachine::start(t0, D);
        let mut now = t0;
        for i in 0..10_000 {
            let v = &views[(start + i * 7 / 3) % views.len()];
            m.observe(v, now);
            now += Duration::from_secs(1);
            if m.is_final() {
                break;
            }
        }
        assert!(m.is_final(), "stuck in {:?}", m.state());
    }
}

#[test]
fn refs_running_out_lead_back_to_inactive() {
    let t0 = Instant::now();
    let mut m = LoginMachine::start(t0, D);
    m.observe(&qr("r1"), t0);
    let v = PageView {
        qr_exhausted: true,
        ..Default::default()
    };
    let t = m.observe(&v, t0).0.unwrap();
    assert_eq!(t.to, LoginState::Inactive);
    assert!(t.reason.contains("ran out"));
}

#[test]
fn conflict_gets_one_use_here_then_is_a_fault() {
    let t0 = Instant::now();
    let mut m = LoginMachine::start(t0, D);
    let c = PageView {
        conflict: true,
        ..Default::default()
    };
    assert_eq!(m.observe(&c, t0), (None, Action::ClickUseHere));
    let (t, _) = m.observe(&c, t0);
    assert_eq!(t.unwrap().to, LoginState::Failed);
}

#[test]
fn faults_end_the_run_with_their_status() {
    let t0 = Instant::now();
    let mut m = LoginMachine::start(t0, D);
    let b = PageView {
        banned: true,
        main: true,
        ..Default::default()
    };
    assert_eq!(m.observe(&b, t0).0.unwrap().to.status(), "banned");
    let mut m = LoginMachine::start(t0, D);
    let l = PageView {
        logged_out: true,
        ..Default::default()
    };
    assert_eq!(m.observe(&l, t0).0.unwrap().to.status(), "logged_out");
}

#[test]
fn own_number_parses_from_either_key() {
    assert_eq!(
        phone_from_wid("\"447700900123:1@c.us\"").as_deref(),
        Some("447700900123")
    );
    assert_eq!(
        phone_from_wid("\"447700900123@c.us\"").as_deref(),
        Some("447700900123")
    );
    assert_eq!(
        phone_from_wid("447700900123:12@c.us").as_deref(),
        Some("447700900123")
    );
    assert_eq!(phone_from_wid("\"\""), None);
    assert_eq!(phone_from_wid("\"abc@c.us\""), None);
    // A LID is not a phone number, however many digits it has.
    assert_eq!(phone_from_wid("\"123456789012345@lid\""), None);
    assert_eq!(phone_from_wid("98765432109876@lid"), None);
    assert_eq!(phone_from_wid("120363041234567890@g.us"), None);
}

#[test]
fn an_account_known_by_its_lid_alone_still_comes_up_ready() {
    let t0 = Instant::now();
    let mut m = LoginMachine::start(t0, D);
    let lid_only = PageView {
        main: true,
        own_id: Some("98765432109876543@lid".into()),
        ..Default::default()
    };
    let (t, a) = m.observe(&lid_only, t0);
    let t = t.unwrap();
    assert_eq!(t.to, LoginState::Ready);
    assert!(t.reason.contains("LID"), "{}", t.reason);
    assert_eq!(a, Action::Stop);
}
