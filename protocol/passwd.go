package protocol

// ChangePassword returns card c re-masked for newPassword, without the
// gateway, as smart-card schemes of this family provide. The card holds
// alpha_i = W_i ^ Tag_i and the gateway keeps neither W_i nor r_i (spec
// section 4), so the card alone can recover Tag_i = W_i ^ alpha_i with the
// old password and mask it again: it draws a fresh r_i from cfg.Rand,
// computes W_i' from newPassword with the card's own password function
// (SHA-256 under classic, Argon2id with the card's parameters under
// hardened) and sets alpha_i' = W_i' ^ Tag_i and, under hardened, the fuzzy
// verifier v_i' of W_i'. Identity, key version and KDF parameters are kept;
// logins made with the new card are indistinguishable on the wire from
// logins made with the old one, since Tag_i is the same.
//
// A fresh r_i, rather than the old one, means that the new card shares no
// salt with copies of the old card, so guesses computed against an old
// copy are of no use against the new one.
//
// Under hardened a wrong oldPassword is refused with ReasonWrongPassword
// in 255 of 256 cases. Under classic the card cannot tell a wrong old
// password at all (it has no verifier): the result would then carry a
// wrong Tag_i, and every login with it would be rejected. Callers must
// therefore have checked oldPassword before, as the CLI does by opening
// the password-sealed card file with it. c is not modified; the caller
// should wipe it and the old file once the new card is stored.
func ChangePassword(c Card, oldPassword, newPassword string, cfg Config) (Card, error) {
	if err := cfg.check(true); err != nil {
		return Card{}, err
	}
	if err := c.Validate(); err != nil {
		return Card{}, err
	}
	oldW := passwordHash(c.Profile, oldPassword, &c.R, c.KDF)
	defer clear(oldW[:])
	if c.Profile == Hardened && fuzzyVerifier(&oldW) != c.Fuzzy {
		return Card{}, ReasonWrongPassword
	}
	tag := xor32(&oldW, &c.Alpha)
	defer clear(tag[:])

	n := c
	if err := cfg.random(n.R[:]); err != nil {
		return Card{}, err
	}
	newW := passwordHash(n.Profile, newPassword, &n.R, n.KDF)
	defer clear(newW[:])
	n.Alpha = xor32(&newW, &tag)
	if n.Profile == Hardened {
		n.Fuzzy = fuzzyVerifier(&newW)
	}
	return n, nil
}
