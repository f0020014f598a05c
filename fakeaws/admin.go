package fakeaws

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SessionInfo describes a session for the admin API.
type SessionInfo struct {
	ID       string `json:"id"`
	Target   string `json:"target"`
	Document string `json:"document"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	// The agent's new Output: bytes, and seconds from the first to the last
	// message, i.e. the rate the agent itself sent at.
	AgentOutputBytes   int64   `json:"agent_output_bytes"`
	AgentOutputSeconds float64 `json:"agent_output_seconds"`
	// Mux mode (docs/fakeaws.md 4.3): smux streams accepted, streams
	// answered with ConnectToPortError, peak client bytes buffered in smux.
	MuxStreamsAccepted int64 `json:"mux_streams_accepted,omitempty"`
	MuxDialsFailed     int64 `json:"mux_dials_failed,omitempty"`
	MuxBufferedPeak    int64 `json:"mux_buffered_peak,omitempty"`
}

// IssuedCredential is one credential of the fake's IAM store, as the admin
// API lists it (GET /_fake/credentials).
type IssuedCredential struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	SessionToken    string `json:"session_token,omitempty"`
	Principal       string `json:"principal"`
}

// SessionInfos lists every session.
func (s *Server) SessionInfos() []SessionInfo {
	var out []SessionInfo
	for _, id := range s.Sessions() {
		ss := s.session(id)
		if ss == nil {
			continue
		}
		ss.mu.Lock()
		out = append(out, SessionInfo{ID: id, Target: ss.target.ID, Document: ss.document.Name, State: ss.state.String(), Reason: ss.reason,
			AgentOutputBytes: ss.outBytes, AgentOutputSeconds: ss.outLast.Sub(ss.outFirst).Seconds(),
			MuxStreamsAccepted: ss.agentSt.MuxStreamsAccepted.Load(), MuxDialsFailed: ss.agentSt.MuxDialsFailed.Load(),
			MuxBufferedPeak: ss.agentSt.MuxBufferedPeak.Load()})
		ss.mu.Unlock()
	}
	return out
}

// handleAdmin serves the loopback-only admin API under /_fake/.
func (s *Server) handleAdmin(w http.ResponseWriter, r *http.Request) {
	if !isLoopbackRemote(r.RemoteAddr) {
		http.Error(w, "admin API is loopback-only", http.StatusForbidden)
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/_fake/")
	q := r.URL.Query()
	switch {
	case path == "stats" && r.Method == http.MethodGet:
		writeJSON(w, s.Stats())
	case path == "violations" && r.Method == http.MethodGet:
		sev := q.Get("severity")
		if sev == "" {
			sev = "warning"
		}
		writeJSON(w, s.Violations(sev))
	case path == "sessions" && r.Method == http.MethodGet:
		writeJSON(w, s.SessionInfos())
	case path == "faults" && r.Method == http.MethodPost:
		var rule FaultRule
		if err := json.NewDecoder(r.Body).Decode(&rule); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := s.AddFault(&rule); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case path == "faults" && r.Method == http.MethodDelete:
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case path == "api-faults" && r.Method == http.MethodPost:
		var f struct {
			Op     string `json:"op"`
			Type   string `json:"type"`
			Status int    `json:"status"`
			Count  int    `json:"count"`
		}
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil || f.Type == "" || f.Status == 0 {
			http.Error(w, "want {op, type, status, count}", http.StatusBadRequest)
			return
		}
		s.FailAPI(f.Op, f.Type, f.Status, max(f.Count, 1))
		w.WriteHeader(http.StatusNoContent)
	case path == "upgrade-faults" && r.Method == http.MethodPost:
		status, _ := strconv.Atoi(q.Get("status"))
		count, _ := strconv.Atoi(q.Get("count"))
		if status < 400 || count < 1 {
			http.Error(w, "want ?status=4xx|5xx&count=N", http.StatusBadRequest)
			return
		}
		s.FailUpgrades(status, count)
		w.WriteHeader(http.StatusNoContent)
	case path == "targets" && r.Method == http.MethodPost:
		var t Target
		if err := json.NewDecoder(r.Body).Decode(&t); err != nil || t.ID == "" {
			http.Error(w, "want a target JSON with ID", http.StatusBadRequest)
			return
		}
		s.AddTarget(t)
		w.WriteHeader(http.StatusNoContent)
	case path == "sts-delay" && r.Method == http.MethodPost:
		d, err := time.ParseDuration(q.Get("d"))
		if err != nil || d < 0 {
			http.Error(w, "want ?d=DURATION", http.StatusBadRequest)
			return
		}
		s.IAM.SetSTSDelay(d)
		w.WriteHeader(http.StatusNoContent)
	case path == "credentials" && r.Method == http.MethodGet:
		// Every credential the fake knows, secrets included: the secret
		// scans look for them in everything ssmproxy leaves behind.
		var out []IssuedCredential
		for _, c := range s.IAM.Issued() {
			out = append(out, IssuedCredential{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey,
				SessionToken: c.SessionToken, Principal: c.Principal.ARN(c.Account)})
		}
		writeJSON(w, out)
	case path == "credentials/expire" && r.Method == http.MethodPost:
		s.IAM.ExpireNow(q.Get("akid"))
		w.WriteHeader(http.StatusNoContent)
	case strings.HasPrefix(path, "sessions/") && r.Method == http.MethodPost:
		s.handleSessionAdmin(w, r, strings.TrimPrefix(path, "sessions/"))
	default:
		http.Error(w, "unknown admin endpoint", http.StatusNotFound)
	}
}

func (s *Server) handleSessionAdmin(w http.ResponseWriter, r *http.Request, rest string) {
	id, action, _ := strings.Cut(rest, "/")
	q := r.URL.Query()
	var err error
	switch action {
	case "terminate":
		err = s.TerminateSession(id, q.Get("reason"))
	case "close":
		code, _ := strconv.Atoi(q.Get("code"))
		err = s.CloseLeg(id, defaultString(q.Get("leg"), "client"), code, q.Get("text"))
	case "inject":
		body, rerr := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if rerr != nil {
			http.Error(w, rerr.Error(), http.StatusBadRequest)
			return
		}
		err = s.Inject(id, defaultString(q.Get("leg"), "client"), body, q.Get("text") == "1")
	case "half-open":
		err = s.HalfOpen(id, q.Get("on") != "0")
	case "refuse-agent":
		err = s.RefuseAgentLegs(id, q.Get("on") != "0")
	default:
		http.Error(w, "unknown session action", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func defaultString(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// AgentStats returns the fake agent's counters for a session.
func (s *Server) AgentStats(id string) map[string]int64 {
	ss := s.session(id)
	if ss == nil {
		return nil
	}
	a := &ss.agentSt
	return map[string]int64{
		"frames_in": a.FramesIn.Load(), "frames_out": a.FramesOut.Load(), "data_out": a.DataMessagesOut.Load(),
		"retransmissions": a.Retransmissions.Load(), "acks_in": a.AcksIn.Load(), "acks_out": a.AcksOut.Load(),
		"duplicates_in": a.DuplicatesIn.Load(), "duplicates_reacked": a.DuplicatesReacked.Load(),
		"out_of_order_in": a.OutOfOrderIn.Load(), "digest_failures": a.DigestFailures.Load(),
		"bytes_to_target": a.BytesToTarget.Load(), "bytes_from_target": a.BytesFromTarget.Load(),
		"reconnects": a.Reconnects.Load(), "dropped_not_ready": a.DroppedNotReady.Load(),
		"mux_streams_accepted": a.MuxStreamsAccepted.Load(), "mux_dials_failed": a.MuxDialsFailed.Load(),
		"mux_buffered": a.MuxBuffered.Load(), "mux_buffered_peak": a.MuxBufferedPeak.Load(),
	}
}
