// Package protocol implements the tagauth authentication protocol (patent
// EP 4 412 152 A1) as a sans-IO library: a user holding a smart card logs in
// to an IoT device, the device asks a gateway to vouch for the user, and the
// card and the device come out with a shared session key and a sealed
// channel for collaboration tasks. The package computes and checks
// messages; it never opens a socket, reads a clock or draws randomness of
// its own. The normative contract is the specification, PROTOCOL.md
// ("the spec" below), version [SpecVersion]; this comment is a guide for people who integrate the
// package into a device, a gateway or a user client.
//
// # Profiles
//
// Every message starts with a profile byte, and every party serves exactly
// one profile:
//
//   - [Hardened] (0x02) is the default and the one to deploy. It keeps the
//     patent's parties, four messages and hash/XOR design, and adds domain
//     separated HMACs, a login nonce, values bound to the device and to the
//     session, key confirmation in both directions (m4 carries tau_j, a fifth
//     message m5 carries tau_i) and Argon2id for the password.
//   - [Classic] (0x01) is the patent's protocol byte for byte. It exists for
//     study and comparison and has known weaknesses (spec section 8): a
//     replayed m4 fools the card, there is no key confirmation, a stolen card
//     and one observed login let an attacker guess the password at SHA-256
//     speed, and insiders or captured devices can impersonate users. Do not
//     deploy it where those matter.
//
// [ParseProfile] maps "classic" and "hardened" (and "", the default) to a
// [Profile].
//
// # Roles and steps
//
// Registration (the patent's FIG. 4) and provisioning:
//
//	gateway:  cred := ProvisionDevice(p, did, mk)              DID_j, Tag_j for the device
//	enroller: req := NewRegistrationRequest(p, id, pw, kdf, cfg)  ID_i, W_i, r_i, T_reg (over TLS)
//	gateway:  card := IssueCard(&req, mk, cfg)                 ID_i, alpha_i, r_i, ... for the user
//
// Login and key agreement (FIG. 5 for classic, spec section 6 for
// hardened). Each arrow is one message, handed over as a byte slice by
// whatever transport the caller runs:
//
//	card:    u := Unlock(card, pw, cfg)               password -> Tag_i (Argon2id under hardened)
//	card:    login, m1 := u.Login(dst, did)           m1  card -> device
//	device:  dl, m2 := dev.Start(ctx, dst, m1)        m2  device -> gateway
//	gateway: m3, v := gw.Verify(ctx, dst, m2)         m3  gateway -> device
//	device:  m4, sess := dl.Respond(dst, m3)          m4  device -> card (classic: device session ready)
//	card:    sess, m5 := login.Finish(dst, m4)        m5  card -> device (hardened only; nil under classic)
//	device:  sess := dl.Confirm(m5)                   hardened: device session ready only now
//
// Transports carry m5 in the confirm request as sid || m5
// ([AppendConfirmPayload], [SplitConfirmPayload]; spec section 11): the sid names
// the login, so a device finds it by [DeviceLogin.SID] whatever address m5
// comes from.
//
// [NewDevice] and [NewGateway] build the long-lived device and gateway
// roles; [Unlock] builds the card's. The card verifies the device through
// gamma_i (and, hardened, tau_j); the device verifies the gateway's m3 by
// recomputing E_i from the beta_i it unmasks, and the user through the
// gateway's m3 (and, hardened, tau_i); the gateway verifies E_i (the user)
// and I_j (the device).
//
// After the login both ends hold a [Session]: [Session.Seal] and
// [Session.Open] carry tasks as records (ChaCha20-Poly1305, one key per
// direction, strictly increasing sequence numbers). [Session.Fingerprint]
// is a hash of the session key that both ends can show to a person to
// compare; it reveals nothing about the key.
//
// Each role has one step function per profile where the profiles differ
// (as crypto/tls keeps one state machine per protocol version): the
// exported step makes the checks both profiles share (profile byte,
// parsing, state, freshness) and hands over to its classic or hardened
// half. Every builder of a wire message appends to a caller's buffer dst
// and returns the extended slice, as the standard library's Append
// functions do ([User.Login], [Device.Start], [Gateway.Verify],
// [DeviceLogin.Respond], [Login.Finish], [M1.Append] .. [M5.Append],
// [AppendError], [AppendConfirmPayload], [Session.Seal]): a nil dst gives a
// fresh slice, and a server answering many requests passes buf[:0] to
// allocate nothing per message. dst must not overlap the message being
// handled: the answer is written while fields of the input are still read.
//
// # Keys
//
// Each secret has its own type, so that passing one where another belongs
// does not compile: [GatewayKey] (K_GTW, one per key version, inside a
// [MasterKey]), [UserTag] (Tag_i), [DeviceTag] (Tag_j, in a
// [DeviceCredential]), [PasswordHash] (W_i, in a [RegistrationRequest]) and
// [SessionKey] (SK_ij, for [DeriveChannelKeys]). They are 32-byte arrays
// underneath; a program converts bytes into one of them only where it loads
// the secret from a file or a database.
//
// # Config: clock and randomness are injected
//
// Every role takes a [Config] with Now (the clock) and Rand (the source of
// K_i, K_j, n_i and r_i). Programs pass time.Now and crypto/rand.Reader.
// The package reads neither on its own, for two reasons: the test vectors
// in testdata/vectors are reproduced exactly from fixed clocks and fixed
// random bytes, and a sans-IO core can be driven by any transport (CoAP,
// UDP, an in-memory pipe in tests) and any event loop without hidden
// blocking. Window (dT, default 10 s), SessionIdle and SessionLife have
// spec defaults when left zero. The gateway draws nothing: its Rand may be
// nil.
//
// # Errors
//
// There are two layers. A wire code ([Code]: [ErrMalformed],
// [ErrUnsupportedProfile], [ErrStaleTimestamp], [ErrReplayed],
// [ErrRejected], [ErrBusy], [ErrInternal]) is what the other party may
// learn; every failed verification, unknown or revoked identity and policy
// denial is the single code [ErrRejected], so that an outsider cannot tell
// which. A precise [Reason] ([ReasonUnknownUser], [ReasonBadE],
// [ReasonBadGamma], [ReasonStaleT1], [ReasonLoginReplay], ...) says what
// actually failed, for the audit log and for the local user; it never goes
// on the wire. Reasons wrap their code, so both tests work on the same
// error:
//
//	errors.Is(err, protocol.ErrRejected)       // the wire's view
//	errors.Is(err, protocol.ReasonUnknownUser) // the audit log's view
//
// Names say which layer an error is: codes are Err* ([ErrReplayed]),
// reasons Reason* ([ReasonLoginReplay], [ReasonStepReplay],
// [ReasonRecordReplay], all three of which the wire calls replayed).
//
// [CodeOf] gives the code to send (ErrInternal for anything that is not a
// protocol outcome) and [ReasonOf] the reason, or nil. [Gateway.Verify]
// already appends the error message (type 0x7f) in place of m3; devices
// answer a card the same way with [AppendError], its profile byte from
// [ErrorProfile]. Every role, and [SessionID] for records, first makes the
// checks of spec section 7 that come before all others ([CheckProfile]: an
// empty message is malformed, a first byte other than the receiver's
// profile unsupported_profile, whatever follows); transports that look
// into a message before handing it to a role call it first too. A second
// m3, m4 or m5 of a login that has already passed that step is
// [ReasonStepReplay] (replayed). [ErrState] (a step called before its turn or
// after Close) and [ErrConfig] are programming errors, not protocol
// outcomes.
//
// A message that fails a check leaves the login state as it was (for
// [Login.Finish] and [DeviceLogin.Respond]): a forged m4 or m3 cannot cancel
// a genuine one still in flight. Callers bound the wait with their own
// timeout and then call Close.
//
// # Concurrency
//
// [Gateway], [Device], [User], [DeviceLogin] and [Session] are safe for
// concurrent use. A [Login] is not: it is one card's half-finished login and
// belongs to the goroutine that handles it. The gateway keeps no
// per-login state, so any number of gateway replicas can serve one
// deployment provided they share the registry and the replay cache.
//
// # What the caller must do
//
//   - Replay caches. The device and the gateway each need a [ReplayCache]
//     whose Insert is atomic (insert-if-absent, never check-then-insert).
//     All replicas of a gateway must share one cache: two replicas with
//     separate caches would each accept the same login once. Under classic
//     the gateway's replay check is also what stops a captured device from
//     reusing a user's login at another device (spec section 8, item 7).
//     Package replay (in the tagauth module) is an in-memory cache for a
//     single process; package prototest has a small one for tests.
//   - Registry. The gateway reads identities, revocations, policy and the
//     master keys through [Registry]; it must answer from memory on the hot
//     path, and an error makes the verify fail closed with [ErrBusy]. Under
//     classic, user and device identities share one namespace: the registry
//     must refuse a user named like a device and vice versa. Classic
//     deployments keep one master key, as version [ClassicKeyVersion].
//   - Secrets. [GatewayKey], [DeviceTag], [SessionKey], a [Card]'s Alpha and
//     R, a [RegistrationRequest]'s W and R, and the password are secrets:
//     never log them, print them or put them in error messages. Show
//     [Session.Fingerprint] (a prefix of it) instead of a key. Close logins,
//     users and sessions when done so that their secrets are wiped, and
//     call [RegistrationRequest.Wipe] after issuing a card. The gateway
//     keeps derived per-identity key material in memory to speed up
//     verification; treat gateway memory with the same care as K_GTW.
//   - Registration transport. The enroller's request carries W_i, which
//     with the card's alpha_i reveals Tag_i, and r_i, which with W_i lets
//     anyone test password guesses: send it only over TLS to the gateway's enrolment endpoint,
//     authenticated by a one-time enrolment code. The gateway must never
//     store or log W_i or r_i.
//   - Clocks. Every timestamp must lie within dT of the receiver's clock:
//     keep the parties' clocks synchronised. A stale error reports the skew
//     in milliseconds to help find the wrong clock.
//
// # What the protocol does not give
//
// Neither profile has forward secrecy: whoever later learns a device's
// Tag_j or the gateway's K_GTW can recover the keys of recorded past
// sessions. The user identity travels in clear. With a stolen card and one
// observed login an attacker can still guess passwords offline, at the cost
// of one Argon2id per guess under hardened. See docs/THREAT-MODEL.md.
//
// # Module
//
// This package is a Go module of its own, github.com/tagauth/tagauth/protocol,
// that needs only the standard library, golang.org/x/crypto and
// golang.org/x/text: a firmware or client build that imports it gets none
// of the gateway's and the device agent's dependencies. Its tests use the
// in-memory stores of package [github.com/tagauth/tagauth/protocol/prototest].
package protocol
