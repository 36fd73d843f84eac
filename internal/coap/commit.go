package coap

import (
	"context"

	"github.com/plgd-dev/go-coap/v3/message"
)

// A Committer holds one worker's responses back until what their handling
// produced is committed: the gateway writes the audit records of a batch
// with one write before the batch's answers leave, so that no answer is
// seen whose record a crash could lose. See Server.Commit.
type Committer interface {
	// Commit is called after the handler has handled the last request of
	// a batch (a single request when the server does not batch) and
	// before any response of the batch is sent or cached.
	Commit() error
	// Replace is called when Commit failed, for each request of the batch
	// that reached the handler, by its Request.Index. It returns the
	// response to send (and cache) instead, appending the payload to dst,
	// or ok false to keep the handler's.
	Replace(index int, dst []byte) (code Code, payload []byte, ok bool)
}

// held is a response waiting for its batch's Commit.
type held struct {
	t     ticket
	index int    // Request.Index of its request
	out   int    // its slot in the batch's send queue
	reply []byte // the encoded response (aliases a worker buffer)
	token [message.MaxTokenSize]byte
	tkl   uint8
	mid   int32
	typ   message.Type
}

// hold keeps the response just encoded for the request in w.msg until
// the batch commits (instead of caching it at once).
func (w *worker) hold(t ticket, index int, reply []byte) {
	m := &w.msg
	h := held{t: t, index: index, out: -1, reply: reply, tkl: uint8(len(m.Token)), mid: m.MessageID, typ: m.Type}
	copy(h.token[:], m.Token)
	w.held = append(w.held, h)
}

// replies is a batch's send queue, whose responses endBatch may replace.
type replies interface {
	setReply(k int, reply []byte)
}

// endBatch commits the batch just handled. On failure it replaces the held
// responses the committer names, in place in b's send queue. Then it
// caches them.
func (w *worker) endBatch(b replies) {
	if w.commit == nil {
		return
	}
	var err error
	if w.calls > 0 {
		err = w.commit.Commit()
	}
	for i := range w.held {
		h := &w.held[i]
		if err != nil {
			if code, payload, ok := w.commit.Replace(h.index, w.pbuf[:0]); ok {
				if r := w.encodeHeld(h, code, payload); r != nil {
					h.reply = r
					if h.out >= 0 {
						b.setReply(h.out, r)
					}
				}
			}
		}
		if h.t.shard != nil {
			w.rt.cache.finish(h.t, h.reply)
		}
		*h = held{}
	}
	w.held, w.calls = w.held[:0], 0
}

// encodeHeld encodes a replacement response for h's request into the
// buffer of h's response (growing it if need be).
func (w *worker) encodeHeld(h *held, code Code, payload []byte) []byte {
	// A replacement is a refusal (busy): it never asks for an Echo.
	saved := w.wbuf
	w.wbuf = h.reply[:cap(h.reply)]
	r := w.encodeReply(h.token[:h.tkl], h.mid, h.typ, code, payload, nil)
	w.wbuf = saved
	return r
}

// commitContext sets up a worker's Committer, if the server has one.
func (s *Server) commitContext(ctx context.Context) (context.Context, Committer) {
	if s.Commit == nil {
		return ctx, nil
	}
	return s.Commit(ctx)
}
