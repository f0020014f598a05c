package broker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ssmproxy/ssmproxy/fakeaws"
	"github.com/ssmproxy/ssmproxy/internal/awsconf"
)

// TestDefaultChainOnPlatforms (docs/credentials.md 3.3, issue 7 item 6): on
// ECS, EKS and EC2 the SDK's default chain fetches credentials over plain
// HTTP from a link-local address, and the broker mints from them.
//
//   - container: AWS_CONTAINER_CREDENTIALS_FULL_URI names a loopback agent
//     (as EKS Pod Identity's local agent or a sidecar does);
//   - instance metadata, IPv4 and IPv6: the SDK's own default endpoints,
//     169.254.169.254 and [fd00:ec2::254]. They are not routable here, so
//     the broker's HTTP client sends their requests to a local stand-in; the
//     plain-HTTP rule still sees the real address first, and refused it
//     before it allowed the metadata service.
func TestDefaultChainOnPlatforms(t *testing.T) {
	for _, c := range []struct{ name, imdsMode string }{{"container", ""}, {"instance metadata", "IPv4"}, {"instance metadata IPv6", "IPv6"}} {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEnv(t, fakeaws.Options{})
			creds := e.sessionCreds()
			var served atomic.Int32
			var mods []func(*Options)
			if c.imdsMode == "" {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					served.Add(1)
					_ = json.NewEncoder(w).Encode(map[string]string{"AccessKeyId": creds.AccessKeyID,
						"SecretAccessKey": creds.SecretAccessKey, "Token": creds.SessionToken,
						"Expiration": creds.Expires.UTC().Format(time.RFC3339)})
				}))
				t.Cleanup(srv.Close)
				t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", srv.URL+"/v1/credentials")
			} else {
				t.Setenv("AWS_EC2_METADATA_DISABLED", "")
				t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", c.imdsMode)
				imds := fakeIMDS(t, creds, &served)
				mods = append(mods, func(o *Options) { o.HTTPClient = redirectMetadata(imds) })
			}
			b := e.newBroker(mods...)
			if err := b.Prepare(context.Background()); err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if served.Load() == 0 {
				t.Fatal("the platform endpoint was never asked")
			}
			if n := e.sts("AssumeRole"); n != 1 {
				t.Fatalf("AssumeRole %d, want 1 (minted from the platform's credentials)", n)
			}
			if got := e.calls("AssumeRole")[0].Caller; got == "" {
				t.Fatal("AssumeRole without a caller")
			}
		})
	}
}

// fakeIMDS serves IMDSv2: a session token, the role name, and creds.
func fakeIMDS(t *testing.T, creds aws.Credentials, served *atomic.Int32) *httptest.Server {
	t.Helper()
	const token, role = "imds-session-token", "instance-role"
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		_, _ = w.Write([]byte(token))
	})
	authorised := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Aws-Ec2-Metadata-Token") != token {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET /latest/meta-data/iam/security-credentials/", authorised(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(role))
	}))
	mux.HandleFunc("GET /latest/meta-data/iam/security-credentials/"+role, authorised(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]string{"Code": "Success", "Type": "AWS-HMAC",
			"AccessKeyId": creds.AccessKeyID, "SecretAccessKey": creds.SecretAccessKey, "Token": creds.SessionToken,
			"Expiration": creds.Expires.UTC().Format(time.RFC3339), "LastUpdated": time.Now().UTC().Format(time.RFC3339)})
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// redirectMetadata is the broker's own HTTP client (with the plain-HTTP
// rule) whose requests to the instance metadata addresses reach srv
// instead, as through a proxy: the rule is asked first, as for any request.
// (The dial cannot be redirected: the SDK's metadata client sets its own.)
func redirectMetadata(srv *httptest.Server) aws.HTTPClient {
	to, _ := url.Parse(srv.URL)
	return awsconf.HTTPClient().WithTransportOptions(func(tr *http.Transport) {
		rule := tr.Proxy
		tr.Proxy = func(req *http.Request) (*url.URL, error) {
			u, err := rule(req)
			if host := req.URL.Hostname(); err == nil && (host == "169.254.169.254" || host == "fd00:ec2::254") {
				return to, nil
			}
			return u, err
		}
	})
}
