package config

import "time"

// Config is the raw configuration as the YAML file states it, after
// defaults, ${ENV} expansion and strict decoding. Components never see it
// directly: they receive a *Snapshot, which embeds a validated Config.
// The mapstructure tags are the YAML keys (SPEC §4).
type Config struct {
	Log           Log           `mapstructure:"log"`
	Admin         Admin         `mapstructure:"admin"`
	ShutdownGrace time.Duration `mapstructure:"shutdown_grace"`
	LAN           LAN           `mapstructure:"lan"`
	WAN           WAN           `mapstructure:"wan"`
	DNS           DNS           `mapstructure:"dns"`
	Trunks        []Trunk       `mapstructure:"trunks"`
	Numbering     Numbering     `mapstructure:"numbering"`
	Routes        Routes        `mapstructure:"routes"`
	Headers       Headers       `mapstructure:"headers"`
	Calls         Calls         `mapstructure:"calls"`
	Security      Security      `mapstructure:"security"`
	Media         Media         `mapstructure:"media"`
	CDR           CDR           `mapstructure:"cdr"`
	Capture       Capture       `mapstructure:"capture"`
}

// Log configures zap. Hot.
type Log struct {
	Level  string `mapstructure:"level"`  // debug|info|warn|error
	Format string `mapstructure:"format"` // json|console (restart)
}

// Admin configures the admin HTTP endpoint.
type Admin struct {
	Listen    string `mapstructure:"listen"`     // "" disables (restart)
	TokenFile string `mapstructure:"token_file"` // bearer token for /api/ from non-loopback (hot)
}

// LAN is the side toward the IP-PBX.
type LAN struct {
	Listen    []string `mapstructure:"listen"`    // restart
	Advertise string   `mapstructure:"advertise"` // hot
	PBX       PBX      `mapstructure:"pbx"`
	ACL       ACL      `mapstructure:"acl"`
}

// PBX is the IP-PBX behind the LAN side.
type PBX struct {
	URI         string       `mapstructure:"uri"`
	Trusted     bool         `mapstructure:"trusted"`
	HeaderRules []HeaderRule `mapstructure:"header_rules"`
}

// ACL is an allow/deny CIDR list pair; an empty Allow means allow all on
// the LAN and "only the trunks' servers" on the WAN.
type ACL struct {
	Allow []string `mapstructure:"allow"`
	Deny  []string `mapstructure:"deny"`
}

// WAN is the side toward the trunks.
type WAN struct {
	Listen    []string `mapstructure:"listen"`
	Advertise string   `mapstructure:"advertise"`
	TLS       WANTLS   `mapstructure:"tls"`
	ACL       ACL      `mapstructure:"acl"`
}

// WANTLS is the server certificate and trust store of the WAN side.
type WANTLS struct {
	CertFile   string `mapstructure:"cert_file"`
	KeyFile    string `mapstructure:"key_file"`
	CAFile     string `mapstructure:"ca_file"`
	MinVersion string `mapstructure:"min_version"` // "1.2" | "1.3"
}

// DNS configures the resolver used by b2bua/locate.
type DNS struct {
	Servers []string      `mapstructure:"servers"`
	Timeout time.Duration `mapstructure:"timeout"`
	Stale   time.Duration `mapstructure:"stale"`
}

// Trunk is one SIP trunk profile.
type Trunk struct {
	Name                string        `mapstructure:"name"`
	Domain              string        `mapstructure:"domain"`
	Transport           string        `mapstructure:"transport"` // tls|tcp|udp
	Servers             []string      `mapstructure:"servers"`
	TLS                 TrunkTLS      `mapstructure:"tls"`
	Auth                Auth          `mapstructure:"auth"`
	FromUser            string        `mapstructure:"from_user"`
	CallerID            string        `mapstructure:"caller_id"`
	AllowedCallerIDs    []string      `mapstructure:"allowed_caller_ids"`
	TrustPAI            bool          `mapstructure:"trust_pai"`
	Refer               string        `mapstructure:"refer"` // relay|reject
	FarEndNAT           bool          `mapstructure:"far_end_nat"`
	Channels            int           `mapstructure:"channels"`
	SRTP                string        `mapstructure:"srtp"` // mandatory|optional|off
	AllowSDESInsecure   bool          `mapstructure:"allow_sdes_insecure"`
	SRTPSuites          []string      `mapstructure:"srtp_suites"` // SDES suites offered/accepted, in order; empty = all supported
	Codecs              []string      `mapstructure:"codecs"`
	Video               bool          `mapstructure:"video"`
	T38                 bool          `mapstructure:"t38"`
	PRACK               bool          `mapstructure:"prack"` // offer 100rel toward the trunk (default true)
	Emergency           bool          `mapstructure:"emergency"`
	OptionsInterval     time.Duration `mapstructure:"options_interval"`
	FailoverTimeout     time.Duration `mapstructure:"failover_timeout"`
	FailbackHolddown    time.Duration `mapstructure:"failback_holddown"`
	MaxCallDuration     time.Duration `mapstructure:"max_call_duration"`
	InboundExtensionTag string        `mapstructure:"inbound_extension_tag"`
	HeaderRules         []HeaderRule  `mapstructure:"header_rules"`
}

// TrunkTLS is the client TLS profile toward one trunk.
type TrunkTLS struct {
	ServerName     string `mapstructure:"server_name"` // "" = the trunk domain
	ClientCertFile string `mapstructure:"client_cert_file"`
	ClientKeyFile  string `mapstructure:"client_key_file"`
}

// Auth is how esbc authenticates to a trunk.
type Auth struct {
	Method          string        `mapstructure:"method"` // digest|ip
	Username        string        `mapstructure:"username"`
	Password        string        `mapstructure:"password"`
	Register        bool          `mapstructure:"register"`
	RegisterExpires time.Duration `mapstructure:"register_expires"`
}

// Numbering is the national numbering plan used for E.164 normalisation.
type Numbering struct {
	CountryCode         string `mapstructure:"country_code"`
	NationalPrefix      string `mapstructure:"national_prefix"`
	InternationalPrefix string `mapstructure:"international_prefix"`
}

// Routes is the dial plan.
type Routes struct {
	Emergency           []string        `mapstructure:"emergency"`
	Special             []string        `mapstructure:"special"`
	InboundCallerFormat string          `mapstructure:"inbound_caller_format"` // e164|national
	Outbound            []OutboundRoute `mapstructure:"outbound"`
	Inbound             []InboundRoute  `mapstructure:"inbound"`
}

// OutboundRoute maps a PBX-dialled number to a trunk; Number is the
// replacement template ($1...) applied to the match.
type OutboundRoute struct {
	Match  string `mapstructure:"match"`
	Number string `mapstructure:"number"`
	Trunk  string `mapstructure:"trunk"`
}

// InboundRoute maps a trunk Request-URI user to a PBX extension.
type InboundRoute struct {
	Match     string `mapstructure:"match"`
	Extension string `mapstructure:"extension"`
}

// Headers is the global header policy.
type Headers struct {
	Allow []string     `mapstructure:"allow"`
	Rules []HeaderRule `mapstructure:"rules"`
}

// HeaderRule is one header manipulation: add, remove or replace Header;
// Match (a regexp, optional) restricts it to values that match; Value is
// the new value (add/replace).
type HeaderRule struct {
	Action string `mapstructure:"action"` // add|remove|replace
	Header string `mapstructure:"header"`
	Match  string `mapstructure:"match"`
	Value  string `mapstructure:"value"`
}

// Calls holds session-timer and duration settings (RFC 4028).
type Calls struct {
	SessionExpires time.Duration `mapstructure:"session_expires"`
	MinSE          time.Duration `mapstructure:"min_se"`
	MaxDuration    time.Duration `mapstructure:"max_duration"`
}

// Security holds the edge protection settings.
type Security struct {
	RateLimit       RateLimit    `mapstructure:"rate_limit"`
	UserAgentDeny   []string     `mapstructure:"user_agent_deny"`
	MaxMessageBytes int          `mapstructure:"max_message_bytes"`
	Methods         Methods      `mapstructure:"methods"`
	ServerHeader    string       `mapstructure:"server_header"`
	Limits          Limits       `mapstructure:"limits"`
	AuthFailures    AuthFailures `mapstructure:"auth_failures"`
	Trusted         []string     `mapstructure:"trusted"`
}

// RateLimit is a per-source token bucket and the ban it leads to.
type RateLimit struct {
	PerIP int           `mapstructure:"per_ip"`
	Burst int           `mapstructure:"burst"`
	Ban   time.Duration `mapstructure:"ban"`
}

// Methods lists the request methods accepted per side.
type Methods struct {
	WAN []string `mapstructure:"wan"`
	LAN []string `mapstructure:"lan"`
}

// Limits bounds the shape of a SIP message.
type Limits struct {
	MaxHeaders   int `mapstructure:"max_headers"`
	MaxLineBytes int `mapstructure:"max_line_bytes"`
}

// AuthFailures bans a source after Max failed authentications in Window.
type AuthFailures struct {
	Max    int           `mapstructure:"max"`
	Window time.Duration `mapstructure:"window"`
}

// Media configures the RTP relay.
type Media struct {
	RTPPorts          string        `mapstructure:"rtp_ports"`
	DSCP              DSCP          `mapstructure:"dscp"`
	InactivityTimeout time.Duration `mapstructure:"inactivity_timeout"`
	Quarantine        time.Duration `mapstructure:"quarantine"`
	LatchWindow       time.Duration `mapstructure:"latch_window"`
	Transcode         bool          `mapstructure:"transcode"`
}

// DSCP values (0..63) for RTP and SIP packets.
type DSCP struct {
	RTP int `mapstructure:"rtp"`
	SIP int `mapstructure:"sip"`
}

// CDR configures call detail records.
type CDR struct {
	File string `mapstructure:"file"`
}

// Capture configures pcapng capture.
type Capture struct {
	Dir          string `mapstructure:"dir"`
	Mode         string `mapstructure:"mode"` // off|sip|call|all
	MaxFileBytes int64  `mapstructure:"max_file_bytes"`
	MaxFiles     int    `mapstructure:"max_files"`
}
