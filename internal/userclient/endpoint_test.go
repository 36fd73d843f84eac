package userclient

import (
	"net"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// TestEndpointRepeats: a retransmitted request and the late duplicate answer
// it draws are counted as repeats, so that datagrams less repeats stay two
// per exchange however many were lost.
func TestEndpointRepeats(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// The server ignores the first datagram, answers the retransmission
	// twice (as if its first answer had been delayed), then answers once.
	go func() {
		buf := make([]byte, 1500)
		for i := 0; ; i++ {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			m := message.Message{Options: make(message.Options, 0, 16)}
			if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
				continue
			}
			ack := message.Message{Type: message.Acknowledgement, Code: codes.Changed, MessageID: m.MessageID, Token: m.Token}
			out := make([]byte, 64)
			k, err := coder.DefaultCoder.Encode(ack, out)
			if err != nil {
				return
			}
			switch i {
			case 0: // lost
			case 1:
				srv.WriteToUDP(out[:k], from)
				srv.WriteToUDP(out[:k], from)
			default:
				srv.WriteToUDP(out[:k], from)
			}
		}
	}()
	var link meter
	c, err := DialEndpoint(srv.LocalAddr().String(), nil, 20*time.Millisecond, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	opts := PathOptions("/x")
	for range 2 {
		if code, _, err := c.Post(opts, []byte("hello"), &link); err != nil || code != 0x44 {
			t.Fatalf("post: %v %v", code, err)
		}
	}
	got := link
	// 2 + 1 for the first exchange, 1 + 1 + the late duplicate for the
	// second: 6, of which 2 repeats. A slow machine may retransmit more,
	// which adds repeats only.
	if got.Datagrams-got.Repeats != 4 || got.Repeats < 2 {
		t.Fatalf("link %+v, want 4 datagrams besides at least 2 repeats", got)
	}
}

// meter counts what an Endpoint reports.
type meter struct{ Datagrams, Repeats int }

func (m *meter) Datagram(int) { m.Datagrams++ }
func (m *meter) Repeat()      { m.Repeats++ }
