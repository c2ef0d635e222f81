package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

const base = `
lan: { listen: ["udp://127.0.0.1:0"] }
wan: { listen: ["tcp://127.0.0.1:0"] }
cdr: { file: "" }
`

func TestFullConfigIsValid(t *testing.T) {
	t.Setenv("ESBC_SKYPE_PASSWORD", "s3cret")
	s, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatalf("full.yaml: %v", err)
	}
	sk := s.Trunk("skype")
	if sk == nil || sk.Auth.Password != "s3cret" || sk.Auth.Username != "990500000231" {
		t.Fatalf("skype trunk: %+v", sk)
	}
	gw := s.Trunk("pstn-gw")
	if gw.Channels != 300 || len(gw.Codecs) != 4 || gw.FailoverTimeout != 2*time.Second || gw.Refer != "reject" {
		t.Fatalf("trunk defaults not applied: %+v", gw)
	}
	if s.RTPPortMin != 20000 || s.RTPPortMax != 29999 {
		t.Fatalf("rtp ports %d-%d", s.RTPPortMin, s.RTPPortMax)
	}
	if len(s.Outbound) != 2 || s.Outbound[0].Re.ReplaceAllString("914155550123", s.Outbound[0].Number) != "14155550123" {
		t.Fatalf("outbound routes: %+v", s.Outbound)
	}
	if len(s.LANListen) != 2 || s.LANListen[1] != (Listen{Network: "tcp", Addr: "10.0.0.2:5060"}) {
		t.Fatalf("lan listen: %+v", s.LANListen)
	}
	if got := s.Headers.Allow; len(got) != 2 {
		t.Fatalf("headers.allow replaced the default list, got %v", got)
	}
	red := s.Redacted()
	pw := red["trunks"].([]any)[0].(map[string]any)["auth"].(map[string]any)["password"]
	if pw != "<redacted>" {
		t.Fatalf("password not redacted: %v", pw)
	}
	if red["shutdown_grace"] != "30s" {
		t.Fatalf("durations not in Go syntax: %v", red["shutdown_grace"])
	}
}

func TestMinimalConfigGetsDefaults(t *testing.T) {
	s, err := Parse([]byte(base), "mem")
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if s.ShutdownGrace != d.ShutdownGrace || s.Security.RateLimit != d.Security.RateLimit ||
		s.Media.DSCP != d.Media.DSCP || len(s.Routes.Emergency) != 4 || len(s.Routes.Special) != 5 ||
		s.Calls.SessionExpires != 1800*time.Second || s.Capture.MaxFiles != 10 || s.DNS.Stale != time.Hour {
		t.Fatalf("defaults missing: %+v", s.Config)
	}
}

// TestTrunkInteropKeys: srtp_suites keeps the file's order (empty by
// default: media's own list) and prack defaults to true.
func TestTrunkInteropKeys(t *testing.T) {
	s, err := Parse([]byte(base+`trunks:
  - { name: a, domain: a.example, auth: {method: ip}, srtp_suites: [AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80], prack: false }
  - { name: b, domain: b.example, auth: {method: ip} }
`), "mem")
	if err != nil {
		t.Fatal(err)
	}
	a, b := s.Trunk("a"), s.Trunk("b")
	if strings.Join(a.SRTPSuites, ",") != "AEAD_AES_128_GCM,AES_CM_128_HMAC_SHA1_80" || a.PRACK {
		t.Fatalf("trunk a: srtp_suites %v prack %v", a.SRTPSuites, a.PRACK)
	}
	if len(b.SRTPSuites) != 0 || !b.PRACK {
		t.Fatalf("trunk b defaults: srtp_suites %v prack %v", b.SRTPSuites, b.PRACK)
	}
}

func TestEmbedded(t *testing.T) {
	s := Embedded()
	if !s.Embedded || len(s.LANListen) != 2 || s.WANListen[0] != (Listen{"tls", "127.0.0.1:5061"}) {
		t.Fatalf("embedded: %+v %+v", s.LANListen, s.WANListen)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v", err)
	}
}

// TestErrors covers every validation rule: each case is one bad value and
// the exact error line(s) it must produce.
func TestErrors(t *testing.T) {
	t.Setenv("ESBC_TEST_PORT", "5099")
	cases := []struct {
		name string
		yaml string // appended to base unless it starts with "!"
		want []string
	}{
		{"unknown top key", `foo: 1`, []string{"foo: unknown key"}},
		{"unknown nested key", `trunks: [{name: a, domain: a.example, auth: {method: ip}, srtpp: off}]`, []string{"trunks[0].srtpp: unknown key"}},
		{"unknown deep key", `security: { rate_limit: { per_second: 3 } }`, []string{"security.rate_limit.per_second: unknown key"}},
		{"yaml syntax", `log: [`, nil},
		{"type string for int", `security: { max_message_bytes: lots }`, []string{`security.max_message_bytes: want an integer, got lots`}},
		{"type map for list", `routes: { emergency: { a: 1 } }`, []string{"routes.emergency: want a list, got a mapping"}},
		{"type scalar for map", `log: info`, []string{"log: want a mapping, got a string"}},
		{"type bool", `media: { transcode: maybe }`, []string{"media.transcode: want true or false, got maybe"}},
		{"bad duration", `shutdown_grace: 30`, []string{"shutdown_grace: want a duration such as 30s, got 30"}},
		{"bad duration string", `shutdown_grace: 30 seconds`, []string{`shutdown_grace: invalid duration "30 seconds" (use Go syntax such as 30s)`}},
		{"negative duration", `shutdown_grace: -1s`, []string{"shutdown_grace: must not be negative, got -1s"}},
		{"env unset", `security: { server_header: "${ESBC_UNSET_VAR_X}" }`, []string{"security.server_header: environment variable ESBC_UNSET_VAR_X is not set"}},
		{"env into int", `security: { max_message_bytes: "${ESBC_TEST_PORT}" }`, nil},
		{"log level", `log: { level: loud }`, []string{`log.level: invalid value "loud" (want one of debug, info, warn, error)`}},
		{"log format", `log: { format: xml }`, []string{`log.format: invalid value "xml" (want one of json, console)`}},
		{"admin listen", `admin: { listen: "localhost" }`, []string{`admin.listen: invalid host:port "localhost"`}},
		{"admin token file", `admin: { token_file: /nonexistent/token }`, []string{"admin.token_file: cannot read: /nonexistent/token: no such file or directory"}},
		{"listen scheme", "!lan: { listen: [\"ws://127.0.0.1:5060\"] }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.listen[0]: invalid listen URL "ws://127.0.0.1:5060" (want udp://, tcp:// or tls://host:port)`}},
		{"listen host", "!lan: { listen: [\"udp://pbx.local:5060\"] }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.listen[0]: want an IP address, got "pbx.local"`}},
		{"listen port", "!lan: { listen: [\"udp://127.0.0.1:70000\"] }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.listen[0]: invalid port in "127.0.0.1:70000"`}},
		{"listen empty", "!lan: { listen: [] }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{"lan.listen: at least one listen URL is required"}},
		{"listen duplicate", "!lan: { listen: [\"udp://127.0.0.1:5062\", \"tcp://127.0.0.1:5062\"] }\nwan: { listen: [\"tls://127.0.0.1:5062\"], tls: { cert_file: testdata/wan.crt, key_file: testdata/wan.key } }",
			[]string{"wan.listen[0]: 127.0.0.1:5062 already used by lan.listen[1]"}},
		{"advertise", "!lan: { listen: [\"udp://127.0.0.1:0\"], advertise: \"bad host!\" }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.advertise: invalid host "bad host!"`}},
		{"pbx uri scheme", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"http://10.0.0.1\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.pbx.uri: invalid SIP URI "http://10.0.0.1" (want sip: or sips:)`}},
		{"pbx uri port", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sip:10.0.0.1:99999\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.pbx.uri: invalid port in SIP URI "sip:10.0.0.1:99999"`}},
		{"pbx uri host", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sip:100@\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.pbx.uri: invalid SIP URI "sip:100@": no host`}},
		{"pbx uri ipv6 unbracketed", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sip:2001:db8::10;transport=udp\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.pbx.uri: IPv6 address in SIP URI "sip:2001:db8::10;transport=udp" must be in brackets, as in sip:[2001:db8::10]:5060`}},
		{"pbx uri ipv6 unbracketed with user", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sip:100@::1\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.pbx.uri: IPv6 address in SIP URI "sip:100@::1" must be in brackets, as in sip:[2001:db8::10]:5060`}},
		{"pbx uri ipv6 unbracketed port", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sip:::1:35927\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.pbx.uri: IPv6 address in SIP URI "sip:::1:35927" must be in brackets, as in sip:[2001:db8::10]:5060`}},
		{"pbx uri ipv4 bracketed", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sip:[10.0.0.1]:5060\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.pbx.uri: invalid SIP URI "sip:[10.0.0.1]:5060": only an IPv6 address goes in brackets`}},
		{"pbx uri name bracketed", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sip:[pbx.example]\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.pbx.uri: invalid SIP URI "sip:[pbx.example]": only an IPv6 address goes in brackets`}},
		{"pbx uri ipv6 unclosed", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sip:[::1\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.pbx.uri: invalid SIP URI "sip:[::1": no closing bracket`}},
		{"pbx uri ipv6", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sip:[2001:db8::10]:5060;transport=tcp\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			nil},
		{"pbx uri ipv6 no port", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { uri: \"sips:100@[::1]\" } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			nil},
		{"acl cidr", "!lan: { listen: [\"udp://127.0.0.1:0\"], acl: { allow: [\"10.0.0.0/33\"], deny: [\"nope\"] } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{`lan.acl.allow[0]: invalid CIDR "10.0.0.0/33"`, `lan.acl.deny[0]: invalid CIDR "nope"`}},
		{"tls listener needs cert", "!lan: { listen: [\"udp://127.0.0.1:0\"] }\nwan: { listen: [\"tls://127.0.0.1:0\"] }",
			[]string{"wan.tls.cert_file: required by a tls:// listener"}},
		{"cert without key", "!lan: { listen: [\"udp://127.0.0.1:0\"] }\nwan: { listen: [\"tcp://127.0.0.1:0\"], tls: { cert_file: testdata/wan.crt } }",
			[]string{"wan.tls.cert_file: cert_file and key_file go together"}},
		{"cert missing", "!lan: { listen: [\"udp://127.0.0.1:0\"] }\nwan: { listen: [\"tcp://127.0.0.1:0\"], tls: { cert_file: testdata/none.crt, key_file: testdata/wan.key } }",
			[]string{"wan.tls.cert_file: cannot read: testdata/none.crt: no such file or directory"}},
		{"key does not match", "!lan: { listen: [\"udp://127.0.0.1:0\"] }\nwan: { listen: [\"tcp://127.0.0.1:0\"], tls: { cert_file: testdata/wan.crt, key_file: testdata/other.key } }",
			[]string{"wan.tls.cert_file: invalid certificate/key pair: tls: private key does not match public key"}},
		{"ca garbage", "!lan: { listen: [\"udp://127.0.0.1:0\"] }\nwan: { listen: [\"tcp://127.0.0.1:0\"], tls: { ca_file: testdata/garbage.pem } }",
			[]string{"wan.tls.ca_file: no PEM certificate found"}},
		{"min version", "!lan: { listen: [\"udp://127.0.0.1:0\"] }\nwan: { listen: [\"tcp://127.0.0.1:0\"], tls: { min_version: \"1.1\" } }",
			[]string{`wan.tls.min_version: invalid value "1.1" (want one of 1.2, 1.3)`}},
		{"dns server", `dns: { servers: ["dns.example:53", "127.0.0.1"], timeout: 0s }`,
			[]string{`dns.servers[0]: want an IP address, got "dns.example"`, `dns.servers[1]: invalid host:port "127.0.0.1"`, "dns.timeout: must be positive, got 0s"}},
		{"trunk name missing", `trunks: [{domain: a.example, auth: {method: ip}}]`, []string{"trunks[0].name: required"}},
		{"trunk name bad", `trunks: [{name: "a b", domain: a.example, auth: {method: ip}}]`, []string{`trunks[0].name: invalid name "a b" (letters, digits, _ . -)`}},
		{"trunk duplicate", `trunks: [{name: a, domain: a.example, auth: {method: ip}}, {name: a, domain: b.example, auth: {method: ip}}]`,
			[]string{`trunks[1].name: duplicate trunk name "a" (also trunks[0])`}},
		{"trunk domain", `trunks: [{name: a, auth: {method: ip}}]`, []string{"trunks[0].domain: required"}},
		{"trunk transport", `trunks: [{name: a, domain: a.example, transport: sctp, auth: {method: ip}}]`,
			[]string{`trunks[0].transport: invalid value "sctp" (want one of tls, tcp, udp)`}},
		{"trunk servers", `trunks: [{name: a, domain: a.example, servers: ["a.example"], auth: {method: ip}}]`,
			[]string{`trunks[0].servers[0]: invalid host:port "a.example"`}},
		{"trunk client cert pair", `trunks: [{name: a, domain: a.example, auth: {method: ip}, tls: {client_cert_file: testdata/wan.crt}}]`,
			[]string{"trunks[0].tls.client_cert_file: client_cert_file and client_key_file go together"}},
		{"trunk server name", `trunks: [{name: a, domain: a.example, auth: {method: ip}, tls: {server_name: "x y"}}]`,
			[]string{`trunks[0].tls.server_name: invalid host "x y"`}},
		{"auth method", `trunks: [{name: a, domain: a.example, auth: {method: basic}}]`,
			[]string{`trunks[0].auth.method: invalid value "basic" (want one of digest, ip)`}},
		{"digest needs username", `trunks: [{name: a, domain: a.example}]`, []string{"trunks[0].auth.username: required for digest auth"}},
		{"ip auth register", `trunks: [{name: a, domain: a.example, transport: tcp, allow_sdes_insecure: true, auth: {method: ip, register: true}}]`,
			[]string{"trunks[0].auth.register: must be false with auth.method ip"}},
		{"register expires", `trunks: [{name: a, domain: a.example, transport: tcp, allow_sdes_insecure: true, auth: {username: u, register: true, register_expires: 10s}}]`,
			[]string{"trunks[0].auth.register_expires: must be at least 60s, got 10s"}},
		{"register without a listener of the transport", `trunks: [{name: a, domain: a.example, transport: udp, allow_sdes_insecure: true, auth: {username: u, register: true}}]`,
			[]string{`trunks[0].transport: registering over "udp" needs a udp:// listener in wan.listen for the Contact`}},
		{"caller id", `trunks: [{name: a, domain: a.example, auth: {method: ip}, caller_id: "4155550100", allowed_caller_ids: ["+0123"], from_user: "a b"}]`,
			[]string{`trunks[0].allowed_caller_ids[0]: want an E.164 number, got "+0123"`,
				`trunks[0].caller_id: want an E.164 number such as +14155550100, got "4155550100"`,
				`trunks[0].from_user: invalid SIP user "a b"`}},
		{"refer", `trunks: [{name: a, domain: a.example, auth: {method: ip}, refer: maybe}]`,
			[]string{`trunks[0].refer: invalid value "maybe" (want one of relay, reject)`}},
		{"channels", `trunks: [{name: a, domain: a.example, auth: {method: ip}, channels: 0}]`,
			[]string{"trunks[0].channels: must be in 1..100000, got 0"}},
		{"srtp", `trunks: [{name: a, domain: a.example, auth: {method: ip}, srtp: always}]`,
			[]string{`trunks[0].srtp: invalid value "always" (want one of mandatory, optional, off)`}},
		{"sdes over udp", `trunks: [{name: a, domain: a.example, auth: {method: ip}, transport: udp}]`,
			[]string{`trunks[0].allow_sdes_insecure: srtp "mandatory" over transport "udp" sends SDES keys in clear text: use tls or set allow_sdes_insecure: true`}},
		{"srtp suites valid", `trunks: [{name: a, domain: a.example, auth: {method: ip}, srtp_suites: [AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80], prack: false}]`, nil},
		{"srtp suites unknown", `trunks: [{name: a, domain: a.example, auth: {method: ip}, srtp_suites: [AES_CM_128_HMAC_SHA1_80, aes_cm_128_hmac_sha1_32, AES_256_CM_HMAC_SHA1_80]}]`,
			[]string{`trunks[0].srtp_suites[1]: unknown SRTP suite "aes_cm_128_hmac_sha1_32" (want one of AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM, AEAD_AES_256_GCM)`,
				`trunks[0].srtp_suites[2]: unknown SRTP suite "AES_256_CM_HMAC_SHA1_80" (want one of AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM, AEAD_AES_256_GCM)`}},
		{"srtp suites duplicate", `trunks: [{name: a, domain: a.example, auth: {method: ip}, srtp_suites: [AEAD_AES_256_GCM, AES_CM_128_HMAC_SHA1_32, AEAD_AES_256_GCM]}]`,
			[]string{`trunks[0].srtp_suites[2]: duplicate SRTP suite "AEAD_AES_256_GCM" (also srtp_suites[0])`}},
		{"srtp suites type", `trunks: [{name: a, domain: a.example, auth: {method: ip}, srtp_suites: AES_CM_128_HMAC_SHA1_80}]`,
			[]string{"trunks[0].srtp_suites: want a list, got a string"}},
		{"prack type", `trunks: [{name: a, domain: a.example, auth: {method: ip}, prack: sometimes}]`,
			[]string{"trunks[0].prack: want true or false, got sometimes"}},
		{"codecs", `trunks: [{name: a, domain: a.example, auth: {method: ip}, codecs: [PCMU, AMR]}]`,
			[]string{`trunks[0].codecs[1]: unknown codec "AMR"`}},
		{"codecs empty", `trunks: [{name: a, domain: a.example, auth: {method: ip}, codecs: []}]`,
			[]string{"trunks[0].codecs: at least one codec is required"}},
		{"trunk durations", `trunks: [{name: a, domain: a.example, auth: {method: ip}, failover_timeout: 0s, options_interval: -1s, failback_holddown: -1s, max_call_duration: -1s}]`,
			[]string{"trunks[0].failback_holddown: must not be negative, got -1s", "trunks[0].failover_timeout: must be positive, got 0s",
				"trunks[0].max_call_duration: must not be negative, got -1s", "trunks[0].options_interval: must not be negative, got -1s"}},
		{"extension tag", `trunks: [{name: a, domain: a.example, auth: {method: ip}, inbound_extension_tag: "a b"}]`,
			[]string{`trunks[0].inbound_extension_tag: invalid SIP user "a b"`}},
		{"header rules", `trunks: [{name: a, domain: a.example, auth: {method: ip}, header_rules: [{action: mangle, header: "X Y", match: "(", value: ""}, {action: add, header: X-A}]}]`,
			[]string{`trunks[0].header_rules[0].action: invalid value "mangle" (want one of add, remove, replace)`,
				`trunks[0].header_rules[0].header: invalid header name "X Y"`,
				"trunks[0].header_rules[0].match: invalid regexp: error parsing regexp: missing closing ): `(`",
				`trunks[0].header_rules[1].value: required for action "add"`}},
		{"numbering", `numbering: { country_code: "+1", national_prefix: "x", international_prefix: "0011223" }`,
			[]string{`numbering.country_code: want 1 to 3 digits, got "+1"`, `numbering.international_prefix: want 0 to 5 digits, got "0011223"`,
				`numbering.national_prefix: want 0 to 4 digits, got "x"`}},
		{"emergency numbers", `routes: { emergency: ["911", "nine"], special: [""] }`,
			[]string{`routes.emergency[1]: invalid number "nine"`, `routes.special[0]: invalid number ""`}},
		{"caller format", `routes: { inbound_caller_format: local }`,
			[]string{`routes.inbound_caller_format: invalid value "local" (want one of e164, national)`}},
		{"outbound route", `routes: { outbound: [{ match: '^9(\d+$', trunk: nope }, { match: '^9\d+$', number: '$2', trunk: "" }] }`,
			[]string{"routes.outbound[0].match: invalid regexp: error parsing regexp: missing closing ): `^9(\\d+$`",
				`routes.outbound[0].trunk: no trunk named "nope"`,
				"routes.outbound[1].number: refers to $2 but match has 0 group(s)",
				"routes.outbound[1].trunk: required"}},
		{"inbound route", `routes: { inbound: [{ match: "" , extension: "" }, { match: ".*", extension: "a b" }] }`,
			[]string{"routes.inbound[0].extension: required", "routes.inbound[0].match: required", `routes.inbound[1].extension: invalid SIP user "a b"`}},
		{"headers", `headers: { allow: ["Bad Header"], rules: [{ action: remove }] }`,
			[]string{`headers.allow[0]: invalid header name "Bad Header"`, "headers.rules[0].header: required"}},
		{"pbx header rules", "!lan: { listen: [\"udp://127.0.0.1:0\"], pbx: { header_rules: [{action: replace, header: X, value: \"a\\r\\nb\"}] } }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }",
			[]string{"lan.pbx.header_rules[0].value: must not contain CR, LF or NUL"}},
		{"calls", `calls: { session_expires: 60s, min_se: 30s, max_duration: -1s }`,
			[]string{"calls.max_duration: must not be negative, got -1s", "calls.min_se: must be at least 90s (RFC 4028), got 30s"}},
		{"session expires below min se", `calls: { session_expires: 100s, min_se: 120s }`,
			[]string{"calls.session_expires: must be 0 (off) or at least calls.min_se (2m0s), got 1m40s"}},
		{"rate limit", `security: { rate_limit: { per_ip: 0, burst: -1, ban: -1m } }`,
			[]string{"security.rate_limit.ban: must not be negative, got -1m0s", "security.rate_limit.burst: must be at least per_ip (0), got -1",
				"security.rate_limit.per_ip: must be at least 1, got 0"}},
		{"security misc", `security: { user_agent_deny: [" "], max_message_bytes: 100, server_header: "a\nb", trusted: ["x"] }`,
			[]string{"security.max_message_bytes: must be in 1024..65535, got 100", "security.server_header: must not contain CR, LF or NUL",
				`security.trusted[0]: invalid CIDR "x"`, "security.user_agent_deny[0]: empty pattern"}},
		{"methods", `security: { methods: { wan: [INVITE, invite, FOO], lan: [] } }`,
			[]string{"security.methods.lan: at least one method is required", `security.methods.wan[1]: unknown SIP method "invite"`,
				`security.methods.wan[2]: unknown SIP method "FOO"`}},
		{"limits", `security: { limits: { max_headers: 1, max_line_bytes: 10 }, auth_failures: { max: 0, window: 0s } }`,
			[]string{"security.auth_failures.max: must be at least 1, got 0", "security.auth_failures.window: must be positive, got 0s",
				"security.limits.max_headers: must be at least 10, got 1", "security.limits.max_line_bytes: must be at least 256, got 10"}},
		{"rtp ports syntax", `media: { rtp_ports: "20000:29999" }`, []string{`media.rtp_ports: invalid port range "20000:29999" (want "20000-29999")`}},
		{"rtp ports odd", `media: { rtp_ports: "20001-29999" }`, []string{`media.rtp_ports: range "20001-29999" must start on an even port (RTP even, RTCP odd)`}},
		{"rtp ports bounds", `media: { rtp_ports: "80-100" }`, []string{`media.rtp_ports: range "80-100" must lie in 1024-65535 with start < end`}},
		{"rtp ports small", `media: { rtp_ports: "20000-20002" }`, []string{`media.rtp_ports: range "20000-20002" holds fewer than 2 RTP/RTCP pairs (one call)`}},
		{"dscp", `media: { dscp: { rtp: 64, sip: -1 }, inactivity_timeout: -1s, quarantine: -1s, latch_window: -1s }`,
			[]string{"media.dscp.rtp: DSCP must be in 0..63, got 64", "media.dscp.sip: DSCP must be in 0..63, got -1",
				"media.inactivity_timeout: must not be negative, got -1s", "media.latch_window: must not be negative, got -1s",
				"media.quarantine: must not be negative, got -1s"}},
		{"cdr", "!lan: { listen: [\"udp://127.0.0.1:0\"] }\nwan: { listen: [\"tcp://127.0.0.1:0\"] }\ncdr: { file: cdr.jsonl }",
			[]string{`cdr.file: must be an absolute path, got "cdr.jsonl"`}},
		{"capture", `capture: { mode: everything, dir: rel, max_file_bytes: 10, max_files: 0 }`,
			[]string{`capture.dir: must be an absolute path, got "rel"`, "capture.max_file_bytes: must be at least 65536, got 10",
				"capture.max_files: must be at least 1, got 0", `capture.mode: invalid value "everything" (want one of off, sip, call, all)`}},
		{"capture needs dir", `capture: { mode: sip }`, []string{`capture.dir: required when capture.mode is "sip"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := base + tc.yaml
			if strings.HasPrefix(tc.yaml, "!") {
				doc = tc.yaml[1:]
			}
			_, err := Parse([]byte(doc), "mem")
			if tc.want == nil {
				if tc.name == "yaml syntax" {
					if err == nil || !strings.HasPrefix(err.Error(), "yaml: ") {
						t.Fatalf("err = %v", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("errors:\n got: %q\nwant: %q", got, tc.want)
			}
		})
	}
}

// TestAllErrorsAtOnce checks, against a golden file, that one broken file
// reports every problem, one line per key, in key order.
func TestAllErrorsAtOnce(t *testing.T) {
	_, err := Load("testdata/broken.yaml")
	if err == nil {
		t.Fatal("broken.yaml is valid")
	}
	got := err.Error() + "\n"
	golden := "testdata/broken.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, rerr := os.ReadFile(golden)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if got != string(want) {
		t.Fatalf("errors differ from %s (run with -update to accept):\n%s", golden, got)
	}
}

func TestRestartRequired(t *testing.T) {
	a, err := Parse([]byte(base), "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(`
lan: { listen: ["udp://127.0.0.1:1"] }
wan: { listen: ["tcp://127.0.0.1:0"] }
cdr: { file: "" }
admin: { listen: "127.0.0.1:1" }
log: { level: debug }
media: { rtp_ports: "30000-30099" }
`), "b")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(RestartRequired(a, b), ",")
	if got != "lan.listen,media.rtp_ports,admin.listen" {
		t.Fatalf("restart keys = %s", got)
	}
	if len(RestartRequired(a, a)) != 0 {
		t.Fatal("no change reported as restart")
	}
}

func TestStoreSwapNotifies(t *testing.T) {
	a, _ := Parse([]byte(base), "a")
	b, _ := Parse([]byte(base), "b")
	st := NewStore(a)
	var seen []string
	unsub := st.Subscribe(func(prev, next *Snapshot) { seen = append(seen, prev.Source+">"+next.Source) })
	st.Swap(b)
	unsub()
	c, _ := Parse([]byte(base), "c")
	st.Swap(c)
	if strings.Join(seen, ",") != "a>b" || st.Current() != c || c.Generation != 3 {
		t.Fatalf("seen %v, current %s gen %d", seen, st.Current().Source, c.Generation)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	// config.example.yaml at the repository root documents every key.
	t.Setenv("ESBC_SKYPE_PASSWORD", "x")
	data, err := os.ReadFile("../../../../config.example.yaml")
	if err != nil {
		t.Fatalf("config.example.yaml must exist at the repository root: %v", err)
	}
	// Its TLS paths point to /etc/esbc; check everything else.
	_, err = Parse(data, "config.example.yaml")
	var errs Errors
	if err != nil {
		if !asErrs(err, &errs) {
			t.Fatal(err)
		}
		for _, e := range errs {
			if !strings.HasPrefix(e.Key, "wan.tls.") && !strings.HasPrefix(e.Key, "admin.token_file") {
				t.Errorf("%v", e)
			}
		}
	}
}

func asErrs(err error, es *Errors) bool {
	return errors.As(err, es)
}
