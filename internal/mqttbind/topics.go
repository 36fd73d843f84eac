package mqttbind

import (
	"encoding/hex"
	"strings"

	"github.com/tagauth/tagauth/internal/coapbind"
)

// deviceEndpoints maps a device's paths (spec section 11) to the last
// level of its topics (section 12).
var deviceEndpoints = map[string]string{coapbind.PathLogin: "login", coapbind.PathConfirm: "confirm", coapbind.PathTask: "task"}

// DeviceLevel is the topic level that names a device: the lowercase hex of
// the bytes of DID_j, never the raw identity (which may hold '/', '+' or
// '#').
func DeviceLevel(did string) string { return hex.EncodeToString([]byte(did)) }

// DeviceTopic is the topic of a device endpoint, such as
// tagauth/v1/device/73656e736f722d37/login; "" for a path the device does
// not serve.
func DeviceTopic(root, did, path string) string {
	e, ok := deviceEndpoints[path]
	if !ok {
		return ""
	}
	return root + "/device/" + DeviceLevel(did) + "/" + e
}

// VerifyTopic is the gateways' topic.
func VerifyTopic(root string) string { return root + "/gateway/verify" }

// SharedGroup is the shared subscription group of gateway replicas.
const SharedGroup = "tagauth-gateways"

// VerifyFilter is the shared subscription every gateway replica makes, so
// that each verify reaches one replica.
func VerifyFilter(root string) string { return "$share/" + SharedGroup + "/" + VerifyTopic(root) }

// ReplyTopic is the response topic of the client with identifier id.
func ReplyTopic(root, id string) string { return root + "/reply/" + id }

// replyClient returns the client identifier level of a response topic
// under root/reply/ and whether the topic is one: a non-empty level and
// no wildcards anywhere.
func replyClient(root, topic string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, root+"/reply/")
	if !ok || strings.ContainsAny(topic, "+#\x00") {
		return "", false
	}
	id, _, _ := strings.Cut(rest, "/")
	return id, id != ""
}
