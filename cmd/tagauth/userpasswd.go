package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/protocol"
)

// userPasswd is "tagauth user passwd": the card's password changes on the
// user's host alone (protocol.ChangePassword re-masks alpha_i with the new
// W_i; Tag_i, which the gateway recomputes, is unchanged), and the card
// file is sealed again under the new password and replaced atomically.
func userPasswd(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	const cmd = "user passwd"
	fs := newFlagSet(cmd, "--card FILE [--password-fd N] [--new-password-fd N]",
		"Changes your card's password. The gateway is not involved: the card is re-masked for the\n"+
			"new password and the card file sealed again. Copies of the old file still open with the\n"+
			"old password: delete them.", stderr)
	var oldPS, newPS passwordSource
	oldPS.registerAs(fs, "password-fd", "TAGAUTH_PASSWORD", "Current password", "read the current password from this file descriptor (first line)")
	newPS.registerAs(fs, "new-password-fd", "TAGAUTH_NEW_PASSWORD", "New password", "read the new password from this file descriptor (first line)")
	cardPath := fs.String("card", os.Getenv("TAGAUTH_CARD"), "your card `file` (env TAGAUTH_CARD)")
	if rc, ok := userParse(fs, args); !ok {
		return rc
	}
	if msg := noArgs(fs); msg != "" {
		fmt.Fprintf(stderr, "tagauth %s: %s\n", cmd, msg)
		return 2
	}
	if *cardPath == "" {
		fmt.Fprintf(stderr, "tagauth %s: --card is required\n", cmd)
		return 2
	}
	if err := changeCardPassword(*cardPath, &oldPS, &newPS, stderr); err != nil {
		reportErr(stderr, cmd, err, commonHint)
		return 1
	}
	fmt.Fprintf(stdout, "password changed; %s sealed again (mode 0600). Copies of the old card file still open with the old password: delete them.\n", *cardPath)
	return 0
}

// changeCardPassword does the work of userPasswd. Nothing is written
// unless the old password opens the file and the new card, read back from
// the bytes about to be written, opens with the new password.
func changeCardPassword(path string, oldPS, newPS *passwordSource, stderr io.Writer) error {
	data, err := card.Load(path)
	if err != nil {
		return err
	}
	oldPW, err := oldPS.read(stderr, false)
	if err != nil {
		return err
	}
	// The seal checks the old password (under classic the card itself
	// cannot: see protocol.ChangePassword).
	c, err := card.Open(data, oldPW)
	if err != nil {
		return err
	}
	newPW, err := newPS.read(stderr, true)
	if err != nil {
		return err
	}
	if newPW == oldPW {
		return errors.New("the new password is the old one; nothing changed")
	}
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	n, err := protocol.ChangePassword(c, oldPW, newPW, cfg)
	if err != nil {
		return err
	}
	sealed, err := card.Seal(n, newPW, rand.Reader)
	if err != nil {
		return err
	}
	back, err := card.Open(sealed, newPW)
	if err != nil || back != n {
		return fmt.Errorf("the re-sealed card does not read back (%v); %s is unchanged", err, path)
	}
	if err := card.Save(path, sealed); err != nil {
		return fmt.Errorf("%w; %s is unchanged or wholly replaced, never half written", err, path)
	}
	return nil
}
