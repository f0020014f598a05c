// Command fakeaws runs the local AWS stand-in (STS, the SSM API, the Message
// Gateway relay and an SSM agent) until it is killed. It serves e2e tests,
// benchmarks and the demo. Nothing here reaches AWS.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/fakeaws/agent"
	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var (
		addr        = flag.String("addr", "127.0.0.1:0", "listen address for STS, SSM and the admin API (MGS gets its own port on the same host)")
		envFile     = flag.String("env-file", "", "write `export` lines for a client (AWS_REGION, AWS_ENDPOINT_URL_SSM, _STS and _EC2_INSTANCE_CONNECT, keys, FAKEAWS_URL, with -tls AWS_CA_BUNDLE) to this file, mode 0600")
		closeEvery  = flag.Duration("close-every", 0, "close data-channel websockets with 1000 \"Bye\" on this period (0: never)")
		closeLegs   = flag.String("close-legs", "both", "legs the -close-every schedule closes: both, client or agent")
		realistic   = flag.Bool("realistic-agent", true, "agent with the real agent's quirks (1 KiB + 1 ms pacing, head-only resend, no digest check); false: an ideal agent")
		pacing      = flag.Bool("agent-pacing", true, "with -realistic-agent: keep the agent's 1 ms sleep per 1 KiB message (false: unpaced, other quirks kept)")
		credTTL     = flag.Duration("cred-ttl", 0, "lifetime of every credential STS issues (0: as requested)")
		idle        = flag.Duration("idle-timeout", 20*time.Minute, "end sessions idle this long")
		region      = flag.String("region", "us-east-1", "region")
		agentVer    = flag.String("agent-version", "3.3.1142.0", "AgentVersion the agent reports")
		clockSkew   = flag.Duration("clock-skew", 0, "shift the Date header of API answers by this much (a server clock off from the client's)")
		accessKey   = flag.String("access-key", "", "seed this access key id for user alice (default: random)")
		secretKey   = flag.String("secret-key", "", "secret for -access-key")
		rotate      = flag.Bool("rotate-cell-number", true, "new cell-number in every ResumeSession answer")
		strictCell  = flag.Bool("strict-cell-number", false, "with -rotate-cell-number: refuse upgrades to a StreamUrl whose cell-number a ResumeSession replaced (off: the old URL keeps working, as on AWS, where the official plugin re-dials its original StreamUrl and resumes; docs/fakeaws.md section 10)")
		requireSign = flag.Bool("require-signed-upgrade", false, "refuse unsigned client websocket upgrades")
		verbose     = flag.Bool("v", false, "log to stderr")
		publication = flag.String("mgs-publication", string(fakeaws.PublicationAlways), "MGS variant: whether a leg hears pause_publication/start_publication when its peer leaves and returns: always, pause-only or never")
		pageSize    = flag.Int("page-size", fakeaws.DefaultPageSize, "most items per page of DescribeInstanceInformation and DescribeInstances, whatever MaxResults asks")
		pubHeaders  = flag.String("publication-headers", string(fakeaws.HeadersMinimal), "MGS variant: header of publication frames: minimal (zero CreatedDate, no digest; the real agent drops them) or full")
		giveUp      = flag.String("agent-giveup", string(fakeaws.GiveUpSilent), "what the client sees when the agent stops reconnecting: silent (the real agent just stops) or channel-closed")
		queue       = flag.Bool("queue-while-absent", false, "MGS variant: queue frames for an absent leg instead of dropping them")
		procs       = flag.Int("procs", 0, "GOMAXPROCS for the fake (0: the Go default). make bench runs it with 1: one P spares the wakeups of threads that spin and find nothing, which cost more CPU than the relay's parallelism gains, so the benchmark measures ssmproxy rather than the fake (docs/bench.md)")
		cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile to this file until the fake stops")
		eicKeys     = flag.String("eic-authorized-keys", "", "write the keys pushed with EC2 Instance Connect SendSSHPublicKey to this `PATH` (authorized_keys format, mode 0600, emptied at start), each removed when it expires")
		eicUser     = flag.String("eic-user", "", "with -eic-authorized-keys: write only the keys pushed for this OS `USER` (default: every user)")
		eicTTL      = flag.Duration("eic-key-ttl", fakeaws.DefaultEICKeyTTL, "how long a pushed key lives (the service's 60 s; shorter for tests)")
		useTLS      = flag.Bool("tls", false, "serve HTTPS and WSS with a certificate from a CA made at start; its bundle goes next to -env-file as fakeaws-ca.pem (else a temporary file) and the env file names it in AWS_CA_BUNDLE")
		eicECDSA    = flag.Bool("eic-ecdsa", false, "variant: accept ECDSA keys in SendSSHPublicKey (AWS documents RSA and ED25519 only)")
		targets     listFlag
		offline     listFlag
		roles       listFlag
		mfaDevices  listFlag
	)
	flag.Var(&targets, "target", "instance `ID[,name=VALUE][,tag:KEY=VALUE...][,ip=A.B.C.D][,dns=NAME][,ping=Online|ConnectionLost][,agent=VERSION]`, connected unless ping=ConnectionLost (repeatable; default i-0123456789abcdef0)")
	flag.Var(&offline, "offline-target", "known instance whose agent is not connected (repeatable)")
	flag.Var(&roles, "role", "IAM role any user of the account may assume, as `NAME[:MAXSESSION]` (repeatable; MAXSESSION e.g. 12h, default 1h)")
	flag.Var(&mfaDevices, "mfa-device", "register an MFA device `SERIAL` for user alice (repeatable; the valid code is 123456)")
	flag.Parse()
	if *procs > 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(*procs)
	}

	if *cpuProfile != "" {
		if f, err := os.Create(*cpuProfile); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	quirks := agent.Quirks{Unpaced: !*pacing}
	if !*realistic {
		quirks = agent.Quirks{Unpaced: true, ResendAllExpired: true, CheckDigest: true}
	}
	caFile := ""
	if *useTLS && *envFile != "" {
		caFile = filepath.Join(filepath.Dir(*envFile), "fakeaws-ca.pem")
	}
	srv := fakeaws.New(fakeaws.Options{
		TLS: *useTLS, CABundleFile: caFile,
		Region: *region, CredTTL: *credTTL, AgentQuirks: quirks, AgentVersion: *agentVer, ClockSkew: *clockSkew,
		CloseEvery: *closeEvery, CloseLegs: *closeLegs, IdleTimeout: *idle,
		RotateCellNumber: *rotate, StrictCellNumber: *rotate && *strictCell, RequireSignedUpgrade: *requireSign, Log: log,
		Publication: fakeaws.Publication(*publication), PublicationHeaders: fakeaws.PublicationHeaders(*pubHeaders),
		AgentGiveUp: fakeaws.AgentGiveUp(*giveUp), QueueWhileAbsent: *queue, PageSize: *pageSize,
		EICAuthorizedKeys: *eicKeys, EICUser: *eicUser, EICKeyTTL: *eicTTL, EICAcceptECDSA: *eicECDSA,
	})
	var specs []fakeaws.Target
	for _, t := range targets {
		spec, err := fakeaws.ParseTargetSpec(t)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fakeaws: -target:", err)
			os.Exit(2)
		}
		specs = append(specs, spec)
	}
	if *pageSize < 1 {
		fmt.Fprintln(os.Stderr, "fakeaws: -page-size must be at least 1")
		os.Exit(2)
	}
	if err := srv.Start(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "fakeaws:", err)
		os.Exit(1)
	}
	if len(specs) == 0 {
		specs = []fakeaws.Target{{ID: fakeaws.DefaultInstance, Connected: true}}
	}
	ids := make([]string, 0, len(specs))
	for _, t := range specs {
		srv.AddTarget(t)
		ids = append(ids, t.ID)
	}
	for _, t := range offline {
		srv.AddTarget(fakeaws.Target{ID: t, Connected: false})
	}
	for _, r := range roles {
		name, maxS, _ := strings.Cut(r, ":")
		role := iam.Role{Name: name}
		if maxS != "" {
			d, err := time.ParseDuration(maxS)
			if err != nil {
				fmt.Fprintf(os.Stderr, "fakeaws: -role %s: %v\n", r, err)
				os.Exit(2)
			}
			role.MaxSession = d
		}
		srv.IAM.AddRole(role)
	}
	user := srv.IAM.AddUser("alice")
	for _, serial := range mfaDevices {
		srv.IAM.AddMFADevice("alice", serial)
	}
	if *accessKey != "" {
		if *secretKey == "" {
			fmt.Fprintln(os.Stderr, "fakeaws: -access-key needs -secret-key")
			os.Exit(2)
		}
		user = srv.IAM.AddKey("alice", *accessKey, *secretKey)
	}
	if *envFile != "" {
		if err := writeEnvFile(*envFile, srv.Env(user)); err != nil {
			fmt.Fprintln(os.Stderr, "fakeaws:", err)
			srv.Close()
			os.Exit(1)
		}
	}
	fmt.Fprintf(os.Stderr, "fakeaws: API %s, MGS %s, targets %s\n", srv.URL(), srv.MGSURL(), strings.Join(ids, " "))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	<-sig
	srv.Close()
}

// writeEnvFile writes shell export lines atomically with mode 0600 (it holds
// a secret key).
func writeEnvFile(path string, env []string) error {
	var b strings.Builder
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
	}
	return fakeaws.WriteFileAtomic(path, []byte(b.String()))
}
