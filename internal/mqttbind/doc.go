// Package mqttbind is tagauth's MQTT version 5 binding (spec section 12),
// for devices that cannot be reached on UDP: they connect out to a broker
// and serve their endpoints there, and the gateways and users connect to
// the same broker. It is another binding of the same endpoints as
// internal/coap, not another agent: a [Responder] subscribes to the
// endpoints' topics and feeds each request to the coap.Handler the CoAP
// server runs, and a [Requester] sends requests and implements
// transport.Poster, which the device agent's relay and the user client
// take instead of CoAP.
//
// # Request and response
//
// A request is published with QoS 1, the Response Topic of the
// requester, {root}/reply/{client id} (128 random bits in the identifier),
// 16 random bytes of Correlation Data never reused, and a Message Expiry
// equal to the requester's timeout. The responder publishes the answer to
// that topic with the same Correlation Data; an answer whose second byte
// is 0x7f is the error message of spec section 7, anything else success
// ([Answer] maps it to the CoAP code of section 11). The requester takes
// the first answer per Correlation Data and drops the rest.
//
// A responder drops a request without Response Topic or Correlation Data,
// or whose Response Topic is not under {root}/reply/. It keeps answers by
// (response topic, correlation data) in an [AnswerCache] for the larger
// of 2 dT and the request's Message Expiry, so that a QoS 1 duplicate is
// answered from it, never run again and never answered as a replay.
// Gateway replicas share the cache in Redis ([RedisCache]).
//
// # Verified sources (binding extension)
//
// A device's responder answers the first login from a client identifier
// it has not verified lately with an empty answer carrying an Echo
// challenge in the user property tagauth-echo ([Echoer]); the requester
// repeats the request with it. The handler then sees the verified
// requester in coap.Request.Peer ([SourceName]), which the device relays
// to the gateway as the source its failed logins are charged to (user
// property tagauth-source). docs/ARCHITECTURE.md describes it.
//
// # Connections
//
// [Conn] keeps one connection to the broker with autopaho: it reconnects
// with exponential backoff, subscribes again to every topic registered,
// logs when the broker is unreachable and counts it ([Conn.Collectors]).
// The package never logs payloads.
package mqttbind
