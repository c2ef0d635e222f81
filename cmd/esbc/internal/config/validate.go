package config

import (
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// compile validates cfg (every error at once) and builds the snapshot.
func compile(cfg Config, source string, embedded bool) (*Snapshot, error) {
	var errs Errors
	s := &Snapshot{Config: cfg, Source: source, Embedded: embedded, LoadedAt: time.Now(), TrunkIndex: map[string]int{}}
	v := validator{errs: &errs}

	v.enum("log.level", cfg.Log.Level, "debug", "info", "warn", "error")
	v.enum("log.format", cfg.Log.Format, "json", "console")
	if cfg.Admin.Listen != "" {
		v.hostPort("admin.listen", cfg.Admin.Listen, false)
	}
	if cfg.Admin.TokenFile != "" {
		if b, err := os.ReadFile(cfg.Admin.TokenFile); err != nil {
			errs.add("admin.token_file", "cannot read: %v", unwrapPath(err))
		} else if strings.TrimSpace(string(b)) == "" {
			errs.add("admin.token_file", "file is empty")
		}
	}
	v.nonNegative("shutdown_grace", cfg.ShutdownGrace)

	// Sides.
	seen := map[string]string{}
	s.LANListen = v.listens("lan.listen", cfg.LAN.Listen, seen)
	s.WANListen = v.listens("wan.listen", cfg.WAN.Listen, seen)
	v.host("lan.advertise", cfg.LAN.Advertise, true)
	v.host("wan.advertise", cfg.WAN.Advertise, true)
	if cfg.LAN.PBX.URI != "" {
		v.sipURI("lan.pbx.uri", cfg.LAN.PBX.URI)
	}
	v.headerRules("lan.pbx.header_rules", cfg.LAN.PBX.HeaderRules)
	s.LANAllow = v.prefixes("lan.acl.allow", cfg.LAN.ACL.Allow)
	s.LANDeny = v.prefixes("lan.acl.deny", cfg.LAN.ACL.Deny)
	s.WANAllow = v.prefixes("wan.acl.allow", cfg.WAN.ACL.Allow)
	s.WANDeny = v.prefixes("wan.acl.deny", cfg.WAN.ACL.Deny)

	needTLS := false
	for _, l := range append(append([]Listen(nil), s.LANListen...), s.WANListen...) {
		needTLS = needTLS || l.Network == "tls"
	}
	t := cfg.WAN.TLS
	switch {
	case t.CertFile == "" && t.KeyFile == "":
		if needTLS && !embedded {
			errs.add("wan.tls.cert_file", "required by a tls:// listener")
		}
	case t.CertFile == "" || t.KeyFile == "":
		errs.add("wan.tls.cert_file", "cert_file and key_file go together")
	default:
		v.keyPair("wan.tls.cert_file", "wan.tls.key_file", t.CertFile, t.KeyFile)
	}
	if t.CAFile != "" {
		v.caFile("wan.tls.ca_file", t.CAFile)
	}
	v.enum("wan.tls.min_version", t.MinVersion, "1.2", "1.3")

	for i, srv := range cfg.DNS.Servers {
		v.hostPort(fmt.Sprintf("dns.servers[%d]", i), srv, true)
	}
	v.positive("dns.timeout", cfg.DNS.Timeout)
	v.nonNegative("dns.stale", cfg.DNS.Stale)

	for i := range cfg.Trunks {
		v.trunk(i, &cfg.Trunks[i], s.TrunkIndex)
		v.trunkListener(i, &cfg.Trunks[i], s.WANListen, len(cfg.WAN.Listen) > 0)
	}

	n := cfg.Numbering
	v.digits("numbering.country_code", n.CountryCode, 1, 3)
	v.digits("numbering.national_prefix", n.NationalPrefix, 0, 4)
	v.digits("numbering.international_prefix", n.InternationalPrefix, 0, 5)

	r := cfg.Routes
	for i, num := range r.Emergency {
		v.dialString(fmt.Sprintf("routes.emergency[%d]", i), num)
	}
	for i, num := range r.Special {
		v.dialString(fmt.Sprintf("routes.special[%d]", i), num)
	}
	v.enum("routes.inbound_caller_format", r.InboundCallerFormat, "e164", "national")
	for i, o := range r.Outbound {
		key := fmt.Sprintf("routes.outbound[%d]", i)
		re := v.regexp(key+".match", o.Match, true)
		if o.Trunk == "" {
			errs.add(key+".trunk", "required")
		} else if _, ok := s.TrunkIndex[o.Trunk]; !ok {
			errs.add(key+".trunk", "no trunk named %q", o.Trunk)
		}
		if re != nil {
			for _, g := range regexp.MustCompile(`\$\{?(\d+)`).FindAllStringSubmatch(o.Number, -1) {
				if k, _ := strconv.Atoi(g[1]); k > re.NumSubexp() {
					errs.add(key+".number", "refers to $%d but match has %d group(s)", k, re.NumSubexp())
				}
			}
		}
		s.Outbound = append(s.Outbound, CompiledOutbound{OutboundRoute: o, Re: re})
	}
	for i, in := range r.Inbound {
		key := fmt.Sprintf("routes.inbound[%d]", i)
		re := v.regexp(key+".match", in.Match, true)
		if in.Extension == "" {
			errs.add(key+".extension", "required")
		} else if !sipUserRe.MatchString(in.Extension) {
			errs.add(key+".extension", "invalid SIP user %q", in.Extension)
		}
		s.Inbound = append(s.Inbound, CompiledInbound{InboundRoute: in, Re: re})
	}

	for i, h := range cfg.Headers.Allow {
		v.headerName(fmt.Sprintf("headers.allow[%d]", i), h)
	}
	v.headerRules("headers.rules", cfg.Headers.Rules)

	c := cfg.Calls
	if c.MinSE < 90*time.Second {
		errs.add("calls.min_se", "must be at least 90s (RFC 4028), got %s", c.MinSE)
	}
	if c.SessionExpires != 0 && c.SessionExpires < c.MinSE {
		errs.add("calls.session_expires", "must be 0 (off) or at least calls.min_se (%s), got %s", c.MinSE, c.SessionExpires)
	}
	v.nonNegative("calls.max_duration", c.MaxDuration)

	sec := cfg.Security
	if sec.RateLimit.PerIP < 1 {
		errs.add("security.rate_limit.per_ip", "must be at least 1, got %d", sec.RateLimit.PerIP)
	}
	if sec.RateLimit.Burst < sec.RateLimit.PerIP {
		errs.add("security.rate_limit.burst", "must be at least per_ip (%d), got %d", sec.RateLimit.PerIP, sec.RateLimit.Burst)
	}
	v.nonNegative("security.rate_limit.ban", sec.RateLimit.Ban)
	for i, ua := range sec.UserAgentDeny {
		if strings.TrimSpace(ua) == "" {
			errs.add(fmt.Sprintf("security.user_agent_deny[%d]", i), "empty pattern")
		}
	}
	if sec.MaxMessageBytes < 1024 || sec.MaxMessageBytes > 65535 {
		errs.add("security.max_message_bytes", "must be in 1024..65535, got %d", sec.MaxMessageBytes)
	}
	v.methods("security.methods.wan", sec.Methods.WAN)
	v.methods("security.methods.lan", sec.Methods.LAN)
	if strings.ContainsAny(sec.ServerHeader, "\r\n\x00") {
		errs.add("security.server_header", "must not contain CR, LF or NUL")
	}
	if sec.Limits.MaxHeaders < 10 {
		errs.add("security.limits.max_headers", "must be at least 10, got %d", sec.Limits.MaxHeaders)
	}
	if sec.Limits.MaxLineBytes < 256 {
		errs.add("security.limits.max_line_bytes", "must be at least 256, got %d", sec.Limits.MaxLineBytes)
	}
	if sec.AuthFailures.Max < 1 {
		errs.add("security.auth_failures.max", "must be at least 1, got %d", sec.AuthFailures.Max)
	}
	v.positive("security.auth_failures.window", sec.AuthFailures.Window)
	s.Trusted = v.prefixes("security.trusted", sec.Trusted)

	m := cfg.Media
	s.RTPPortMin, s.RTPPortMax = v.portRange("media.rtp_ports", m.RTPPorts)
	v.dscp("media.dscp.rtp", m.DSCP.RTP)
	v.dscp("media.dscp.sip", m.DSCP.SIP)
	v.nonNegative("media.inactivity_timeout", m.InactivityTimeout)
	v.nonNegative("media.quarantine", m.Quarantine)
	v.nonNegative("media.latch_window", m.LatchWindow)

	if cfg.CDR.File != "" && !filepath.IsAbs(cfg.CDR.File) {
		errs.add("cdr.file", "must be an absolute path, got %q", cfg.CDR.File)
	}
	cp := cfg.Capture
	v.enum("capture.mode", cp.Mode, "off", "sip", "call", "all")
	if cp.Mode != "off" && cp.Dir == "" {
		errs.add("capture.dir", "required when capture.mode is %q", cp.Mode)
	}
	if cp.Dir != "" && !filepath.IsAbs(cp.Dir) {
		errs.add("capture.dir", "must be an absolute path, got %q", cp.Dir)
	}
	if cp.MaxFileBytes < 1<<16 {
		errs.add("capture.max_file_bytes", "must be at least 65536, got %d", cp.MaxFileBytes)
	}
	if cp.MaxFiles < 1 {
		errs.add("capture.max_files", "must be at least 1, got %d", cp.MaxFiles)
	}

	if len(errs) > 0 {
		return nil, errs.sorted()
	}
	return s, nil
}

type validator struct{ errs *Errors }

var (
	hostnameRe   = regexp.MustCompile(`^(?i:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.(?i:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?))*\.?$`)
	trunkNameRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	sipUserRe    = regexp.MustCompile(`^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$`)
	e164Re       = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)
	dialRe       = regexp.MustCompile(`^\+?[0-9*#]{1,32}$`)
	headerNameRe = regexp.MustCompile(`^[A-Za-z0-9!%'*+\-.^_` + "`" + `|~]+$`)
	methodRe     = regexp.MustCompile(`^[A-Z]+$`)
	knownCodecs  = map[string]bool{"PCMU": true, "PCMA": true, "G729": true, "G722": true, "telephone-event": true, "opus": true, "iLBC": true, "GSM": true, "CN": true}
	// srtpSuites are the SDES suites media offers and accepts (media.Suites).
	srtpSuites   = []string{"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM", "AEAD_AES_256_GCM"}
	knownMethods = map[string]bool{"INVITE": true, "ACK": true, "BYE": true, "CANCEL": true, "OPTIONS": true, "INFO": true,
		"UPDATE": true, "PRACK": true, "NOTIFY": true, "REFER": true, "SUBSCRIBE": true, "MESSAGE": true, "REGISTER": true, "PUBLISH": true}
)

func (v validator) enum(key, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.errs.add(key, "invalid value %q (want one of %s)", val, strings.Join(allowed, ", "))
}

func (v validator) nonNegative(key string, d time.Duration) {
	if d < 0 {
		v.errs.add(key, "must not be negative, got %s", d)
	}
}

func (v validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.errs.add(key, "must be positive, got %s", d)
	}
}

// host accepts an IP address or a DNS name ("" only when optional).
func (v validator) host(key, h string, optional bool) {
	if h == "" {
		if !optional {
			v.errs.add(key, "required")
		}
		return
	}
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return
	}
	if !hostnameRe.MatchString(h) {
		v.errs.add(key, "invalid host %q", h)
	}
}

// hostPort checks "host:port"; ipOnly demands an IP address as host.
func (v validator) hostPort(key, hp string, ipOnly bool) bool {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		v.errs.add(key, "invalid host:port %q", hp)
		return false
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.errs.add(key, "invalid port in %q", hp)
		return false
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if ipOnly {
			v.errs.add(key, "want an IP address, got %q", host)
			return false
		}
		if host != "" && !hostnameRe.MatchString(host) {
			v.errs.add(key, "invalid host %q", host)
			return false
		}
	}
	return true
}

func (v validator) listens(key string, urls []string, seen map[string]string) []Listen {
	if len(urls) == 0 {
		v.errs.add(key, "at least one listen URL is required")
	}
	var out []Listen
	for i, u := range urls {
		k := fmt.Sprintf("%s[%d]", key, i)
		network, addr, ok := strings.Cut(u, "://")
		if !ok || (network != "udp" && network != "tcp" && network != "tls") {
			v.errs.add(k, "invalid listen URL %q (want udp://, tcp:// or tls://host:port)", u)
			continue
		}
		if !v.hostPort(k, addr, true) {
			continue
		}
		proto := network
		if proto == "tls" {
			proto = "tcp"
		}
		if _, port, _ := net.SplitHostPort(addr); port == "0" {
			// ephemeral: never a clash
		} else if prev, dup := seen[proto+" "+addr]; dup {
			v.errs.add(k, "%s already used by %s", addr, prev)
			continue
		}
		seen[proto+" "+addr] = k
		out = append(out, Listen{Network: network, Addr: addr})
	}
	return out
}

// sipURI checks sip:/sips: [user@]host[:port][;params] (RFC 3261 §19.1).
func (v validator) sipURI(key, uri string) {
	rest, ok := strings.CutPrefix(uri, "sip:")
	if !ok {
		rest, ok = strings.CutPrefix(uri, "sips:")
	}
	if !ok {
		v.errs.add(key, "invalid SIP URI %q (want sip: or sips:)", uri)
		return
	}
	if strings.ContainsAny(rest, " \t\r\n<>\"") {
		v.errs.add(key, "invalid SIP URI %q", uri)
		return
	}
	hostport, _, _ := strings.Cut(rest, ";")
	hostport, _, _ = strings.Cut(hostport, "?")
	if at := strings.LastIndexByte(hostport, '@'); at >= 0 {
		if at == 0 {
			v.errs.add(key, "invalid SIP URI %q: empty user", uri)
			return
		}
		hostport = hostport[at+1:]
	}
	host := hostport
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			v.errs.add(key, "invalid port in SIP URI %q", uri)
			return
		}
		host = h
	}
	bracketed := strings.HasPrefix(hostport, "[")
	if bracketed && !strings.Contains(hostport, "]") {
		v.errs.add(key, "invalid SIP URI %q: no closing bracket", uri)
		return
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		v.errs.add(key, "invalid SIP URI %q: no host", uri)
		return
	}
	// RFC 3261 §19.1.1 / §25.1: an IPv6 address in a SIP URI is an
	// IPv6reference ("[" IPv6address "]"). Unbracketed, sipgo reads
	// "sip:2001:db8::10" as host "2001" and fails on the port: the PBX
	// would be unreachable with a configuration that check-config passed.
	if !bracketed && strings.Contains(host, ":") { // no host name has a colon
		v.errs.add(key, "IPv6 address in SIP URI %q must be in brackets, as in sip:[2001:db8::10]:5060", uri)
		return
	}
	if a, err := netip.ParseAddr(host); bracketed && (err != nil || !a.Is6()) {
		v.errs.add(key, "invalid SIP URI %q: only an IPv6 address goes in brackets", uri)
		return
	}
	if _, err := netip.ParseAddr(host); err != nil && !hostnameRe.MatchString(host) {
		v.errs.add(key, "invalid host %q in SIP URI", host)
	}
}

func (v validator) prefixes(key string, list []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				v.errs.add(fmt.Sprintf("%s[%d]", key, i), "invalid CIDR %q", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

func (v validator) regexp(key, expr string, required bool) *regexp.Regexp {
	if expr == "" {
		if required {
			v.errs.add(key, "required")
		}
		return nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		v.errs.add(key, "invalid regexp: %v", err)
		return nil
	}
	return re
}

func (v validator) digits(key, s string, min, max int) {
	if len(s) < min || len(s) > max || strings.Trim(s, "0123456789") != "" {
		v.errs.add(key, "want %d to %d digits, got %q", min, max, s)
	}
}

func (v validator) dialString(key, s string) {
	if !dialRe.MatchString(s) {
		v.errs.add(key, "invalid number %q", s)
	}
}

func (v validator) dscp(key string, d int) {
	if d < 0 || d > 63 {
		v.errs.add(key, "DSCP must be in 0..63, got %d", d)
	}
}

func (v validator) headerName(key, h string) {
	if !headerNameRe.MatchString(h) {
		v.errs.add(key, "invalid header name %q", h)
	}
}

func (v validator) headerRules(key string, rules []HeaderRule) {
	for i, r := range rules {
		k := fmt.Sprintf("%s[%d]", key, i)
		v.enum(k+".action", r.Action, "add", "remove", "replace")
		if r.Header == "" {
			v.errs.add(k+".header", "required")
		} else {
			v.headerName(k+".header", r.Header)
		}
		v.regexp(k+".match", r.Match, false)
		if (r.Action == "add" || r.Action == "replace") && r.Value == "" {
			v.errs.add(k+".value", "required for action %q", r.Action)
		}
		if strings.ContainsAny(r.Value, "\r\n\x00") {
			v.errs.add(k+".value", "must not contain CR, LF or NUL")
		}
	}
}

func (v validator) methods(key string, list []string) {
	if len(list) == 0 {
		v.errs.add(key, "at least one method is required")
	}
	for i, m := range list {
		if !methodRe.MatchString(m) || !knownMethods[m] {
			v.errs.add(fmt.Sprintf("%s[%d]", key, i), "unknown SIP method %q", m)
		}
	}
}

func (v validator) portRange(key, s string) (int, int) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	switch {
	case !ok || err1 != nil || err2 != nil:
		v.errs.add(key, "invalid port range %q (want \"20000-29999\")", s)
	case lo < 1024 || hi > 65535 || lo >= hi:
		v.errs.add(key, "range %q must lie in 1024-65535 with start < end", s)
	case lo%2 != 0:
		v.errs.add(key, "range %q must start on an even port (RTP even, RTCP odd)", s)
	case hi-lo+1 < 4:
		v.errs.add(key, "range %q holds fewer than 2 RTP/RTCP pairs (one call)", s)
	default:
		return lo, hi
	}
	return 0, 0
}

func (v validator) keyPair(certKey, keyKey, certFile, keyFile string) {
	okFiles := true
	for _, f := range [][2]string{{certKey, certFile}, {keyKey, keyFile}} {
		if _, err := os.Stat(f[1]); err != nil {
			v.errs.add(f[0], "cannot read: %v", unwrapPath(err))
			okFiles = false
		}
	}
	if !okFiles {
		return
	}
	if _, err := cryptotls.LoadX509KeyPair(certFile, keyFile); err != nil {
		v.errs.add(certKey, "invalid certificate/key pair: %v", err)
	}
}

func (v validator) caFile(key, f string) {
	data, err := os.ReadFile(f)
	if err != nil {
		v.errs.add(key, "cannot read: %v", unwrapPath(err))
		return
	}
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			v.errs.add(key, "invalid certificate: %v", err)
			return
		}
		n++
	}
	if n == 0 {
		v.errs.add(key, "no PEM certificate found")
	}
}

// trunkListener checks that a registering trunk has a WAN listener of its
// transport: the Contact it registers must name a port esbc listens on, or
// the provider's inbound calls (and the registration itself) go nowhere.
func (v validator) trunkListener(i int, t *Trunk, wan []Listen, declared bool) {
	if !t.Auth.Register || !declared || len(wan) == 0 {
		return // no wan.listen at all is reported under wan.listen itself
	}
	for _, l := range wan {
		if l.Network == t.Transport {
			return
		}
	}
	v.errs.add(fmt.Sprintf("trunks[%d].transport", i), "registering over %q needs a %s:// listener in wan.listen for the Contact", t.Transport, t.Transport)
}

func (v validator) trunk(i int, t *Trunk, index map[string]int) {
	k := fmt.Sprintf("trunks[%d]", i)
	switch {
	case t.Name == "":
		v.errs.add(k+".name", "required")
	case !trunkNameRe.MatchString(t.Name):
		v.errs.add(k+".name", "invalid name %q (letters, digits, _ . -)", t.Name)
	default:
		if j, dup := index[t.Name]; dup {
			v.errs.add(k+".name", "duplicate trunk name %q (also trunks[%d])", t.Name, j)
		} else {
			index[t.Name] = i
		}
	}
	v.host(k+".domain", t.Domain, false)
	v.enum(k+".transport", t.Transport, "tls", "tcp", "udp")
	for j, srv := range t.Servers {
		v.hostPort(fmt.Sprintf("%s.servers[%d]", k, j), srv, false)
	}
	if t.TLS.ServerName != "" {
		v.host(k+".tls.server_name", t.TLS.ServerName, false)
	}
	switch {
	case t.TLS.ClientCertFile == "" && t.TLS.ClientKeyFile == "":
	case t.TLS.ClientCertFile == "" || t.TLS.ClientKeyFile == "":
		v.errs.add(k+".tls.client_cert_file", "client_cert_file and client_key_file go together")
	default:
		v.keyPair(k+".tls.client_cert_file", k+".tls.client_key_file", t.TLS.ClientCertFile, t.TLS.ClientKeyFile)
	}
	v.enum(k+".auth.method", t.Auth.Method, "digest", "ip")
	if t.Auth.Method == "digest" && t.Auth.Username == "" {
		v.errs.add(k+".auth.username", "required for digest auth")
	}
	if t.Auth.Method == "ip" && t.Auth.Register {
		v.errs.add(k+".auth.register", "must be false with auth.method ip")
	}
	if t.Auth.Register && t.Auth.RegisterExpires < 60*time.Second {
		v.errs.add(k+".auth.register_expires", "must be at least 60s, got %s", t.Auth.RegisterExpires)
	}
	if t.FromUser != "" && !sipUserRe.MatchString(t.FromUser) {
		v.errs.add(k+".from_user", "invalid SIP user %q", t.FromUser)
	}
	if t.CallerID != "" && !e164Re.MatchString(t.CallerID) {
		v.errs.add(k+".caller_id", "want an E.164 number such as +14155550100, got %q", t.CallerID)
	}
	for j, c := range t.AllowedCallerIDs {
		if !e164Re.MatchString(c) {
			v.errs.add(fmt.Sprintf("%s.allowed_caller_ids[%d]", k, j), "want an E.164 number, got %q", c)
		}
	}
	v.enum(k+".refer", t.Refer, "relay", "reject")
	if t.Channels < 1 || t.Channels > 100000 {
		v.errs.add(k+".channels", "must be in 1..100000, got %d", t.Channels)
	}
	v.enum(k+".srtp", t.SRTP, "mandatory", "optional", "off")
	if t.SRTP != "off" && (t.Transport == "tcp" || t.Transport == "udp") && !t.AllowSDESInsecure {
		v.errs.add(k+".allow_sdes_insecure", "srtp %q over transport %q sends SDES keys in clear text: use tls or set allow_sdes_insecure: true", t.SRTP, t.Transport)
	}
	seenSuite := map[string]int{}
	for j, su := range t.SRTPSuites {
		key := fmt.Sprintf("%s.srtp_suites[%d]", k, j)
		if !slices.Contains(srtpSuites, su) {
			v.errs.add(key, "unknown SRTP suite %q (want one of %s)", su, strings.Join(srtpSuites, ", "))
		} else if prev, dup := seenSuite[su]; dup {
			v.errs.add(key, "duplicate SRTP suite %q (also srtp_suites[%d])", su, prev)
		} else {
			seenSuite[su] = j
		}
	}
	if len(t.Codecs) == 0 {
		v.errs.add(k+".codecs", "at least one codec is required")
	}
	for j, c := range t.Codecs {
		if !knownCodecs[c] {
			v.errs.add(fmt.Sprintf("%s.codecs[%d]", k, j), "unknown codec %q", c)
		}
	}
	v.nonNegative(k+".options_interval", t.OptionsInterval)
	v.positive(k+".failover_timeout", t.FailoverTimeout)
	v.nonNegative(k+".failback_holddown", t.FailbackHolddown)
	v.nonNegative(k+".max_call_duration", t.MaxCallDuration)
	if t.InboundExtensionTag != "" && !sipUserRe.MatchString(t.InboundExtensionTag) {
		v.errs.add(k+".inbound_extension_tag", "invalid SIP user %q", t.InboundExtensionTag)
	}
	v.headerRules(k+".header_rules", t.HeaderRules)
}

// unwrapPath drops the path from an *os.PathError: the key names the file.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}
