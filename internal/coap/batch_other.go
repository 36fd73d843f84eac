//go:build !(linux && (amd64 || arm64))

package coap

// loopBatch reports that batched I/O is not available here: the worker
// reads one datagram at a time.
func (w *worker) loopBatch(PacketConn) bool { return false }

// batch is unused where batched I/O is not available.
type batch struct{}

func (b *batch) setReply(int, []byte) {}
