package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ssmproxy/ssmproxy/internal/awsconf"
	"github.com/ssmproxy/ssmproxy/internal/clock"
	"github.com/ssmproxy/ssmproxy/keyring"
)

// LoginOptions describe a key to store with "ssmproxy login".
type LoginOptions struct {
	Profile string
	Key     SourceKey
	// Verify asks STS (GetCallerIdentity) whose key it is before storing it,
	// and records the user ARN (the RoleSessionName comes from it).
	Verify bool
	// Region for the verification call (default: the environment's or
	// us-east-1); STSEndpoint overrides the endpoint (tests).
	Region      string
	STSEndpoint string
	// Clock stamps the key's creation time (default the real clock).
	Clock clock.Clock
}

var longTermKeyID = regexp.MustCompile(`^AKIA[A-Z0-9]{12,124}$`)

// Login verifies and stores a long-term key in store, replacing the
// profile's previous key, MFA session and cached credentials.
func Login(ctx context.Context, store keyring.Store, cacheDir string, o LoginOptions) (SourceKey, error) {
	k := o.Key
	k.AccessKeyID, k.SecretAccessKey = strings.TrimSpace(k.AccessKeyID), strings.TrimSpace(k.SecretAccessKey)
	switch {
	case k.AccessKeyID == "" || k.SecretAccessKey == "":
		return SourceKey{}, errors.New("both an access key id and a secret access key are needed")
	case strings.HasPrefix(k.AccessKeyID, "ASIA"):
		return SourceKey{}, errors.New("that is a temporary (ASIA…) key: login stores a long-term IAM user key (AKIA…); " +
			"export temporary credentials instead")
	case !longTermKeyID.MatchString(k.AccessKeyID):
		return SourceKey{}, fmt.Errorf("%s does not look like an IAM access key id (AKIA…)", MaskKeyID(k.AccessKeyID))
	}
	if o.Verify {
		arn, err := callerARN(ctx, Credentials{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey}, o.Region, o.STSEndpoint)
		if err != nil {
			return SourceKey{}, fmt.Errorf("verify the key with STS: %w", err)
		}
		k.ARN = arn
	}
	if k.Created.IsZero() {
		clk := o.Clock
		if clk == nil {
			clk = clock.Real()
		}
		k.Created = clk.Now().UTC()
	}
	data, err := json.Marshal(k)
	if err != nil {
		return SourceKey{}, err
	}
	if err := store.Set(ctx, keyring.Item{Key: SourceItemKey(o.Profile), Data: data,
		Label: "ssmproxy source key " + o.Profile, AskBeforeRead: true}); err != nil {
		return SourceKey{}, err
	}
	if _, err := Logout(ctx, []keyring.Store{store}, cacheDir, o.Profile, false); err != nil {
		return k, err
	}
	return k, nil
}

// Logout removes the profile's MFA sessions and cached credentials, and with
// source also its stored key. It returns what it removed, for the user.
func Logout(ctx context.Context, stores []keyring.Store, cacheDir, profile string, source bool) ([]string, error) {
	var removed []string
	seen := map[keyring.Store]bool{}
	for _, st := range stores {
		if st == nil || seen[st] {
			continue
		}
		seen[st] = true
		keys, err := st.Keys(ctx)
		if err != nil {
			return removed, err
		}
		for _, key := range keys {
			if (source && key == SourceItemKey(profile)) || strings.HasPrefix(key, "mfa-session:"+profile+":") {
				if err := st.Remove(ctx, key); err != nil {
					return removed, err
				}
				removed = append(removed, fmt.Sprintf("%s (%s keyring)", key, st.Backend()))
			}
		}
	}
	if cacheDir == "" {
		var err error
		if cacheDir, err = defaultCacheDir(); err != nil {
			return removed, err
		}
	}
	n, err := fileCache{dir: cacheDir}.removeProfile(profile)
	if n > 0 {
		removed = append(removed, fmt.Sprintf("%d cached credential file(s)", n))
	}
	return removed, err
}

// callerARN asks STS who owns the credentials.
func callerARN(ctx context.Context, c Credentials, region, endpoint string) (string, error) {
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if region == "" {
		region = "us-east-1"
	}
	cfg, err := awsconf.LoadDefaultConfig(ctx, config.WithRegion(region), config.WithCredentialsProvider(aws.AnonymousCredentials{}))
	if err != nil {
		return "", err
	}
	cfg.HTTPClient = awsconf.LoopbackOnlyHTTP(cfg.HTTPClient)
	ctx, cancel := context.WithTimeout(ctx, stsCallTimeout)
	defer cancel()
	out, err := stsClients{base: cfg, endpoint: endpoint}.signedBy(c).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		if code := stsCode(err); code != "" {
			return "", fmt.Errorf("STS refused the key (%s)", code)
		}
		return "", err
	}
	return aws.ToString(out.Arn), nil
}
