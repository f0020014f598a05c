package fakeaws

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ssmproxy/ssmproxy/fakeaws/iam"
)

// The two describe APIs are checked with the AWS SDK's own clients: what
// they serialise and parse is the real wire shape (docs/fakeaws.md 3.1, 3.2).

func inventoryFake(t *testing.T) *TestServer {
	ts := StartTest(t, Options{})
	for _, spec := range []string{
		"i-0aaaaaaaaaaaaaaa1,name=web-1,tag:env=prod,ip=10.0.0.11,dns=ip-10-0-0-11.ec2.internal",
		"i-0aaaaaaaaaaaaaaa2,name=web-2,tag:env=prod,ip=10.0.0.12,dns=ip-10-0-0-12.ec2.internal,ping=ConnectionLost,agent=3.2.582.0",
		"i-0aaaaaaaaaaaaaaa3,name=db,tag:env=staging,ip=10.0.0.13",
		"mi-0bbbbbbbbbbbbbbb1,name=rack-7,tag:env=prod,ip=192.168.1.7,dns=rack-7.lan",
	} {
		tg, err := ParseTargetSpec(spec)
		if err != nil {
			t.Fatal(err)
		}
		ts.AddTarget(tg)
	}
	return ts
}

func (ts *TestServer) ssmClient(c aws.Config) *ssm.Client {
	return ssm.NewFromConfig(c, func(o *ssm.Options) { o.BaseEndpoint = aws.String(ts.URL()) })
}

func (ts *TestServer) ec2Client(c aws.Config) *ec2.Client {
	return ec2.NewFromConfig(c, func(o *ec2.Options) { o.BaseEndpoint = aws.String(ts.URL()) })
}

func ssmIDs(t *testing.T, c *ssm.Client, filters ...ssmtypes.InstanceInformationStringFilter) ([]string, int) {
	t.Helper()
	var ids []string
	pages := 0
	p := ssm.NewDescribeInstanceInformationPaginator(c, &ssm.DescribeInstanceInformationInput{Filters: filters, MaxResults: aws.Int32(50)})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("DescribeInstanceInformation: %v", err)
		}
		pages++
		for _, i := range out.InstanceInformationList {
			ids = append(ids, aws.ToString(i.InstanceId))
		}
	}
	return ids, pages
}

func filter(key string, values ...string) ssmtypes.InstanceInformationStringFilter {
	return ssmtypes.InstanceInformationStringFilter{Key: aws.String(key), Values: values}
}

// TestDescribeInstanceInformationFilters: the documented filter keys, AND
// across filters and OR within one, the documented errors.
func TestDescribeInstanceInformationFilters(t *testing.T) {
	ts := inventoryFake(t)
	c := ts.ssmClient(ts.AWSConfig(nil))
	cases := []struct {
		name    string
		filters []ssmtypes.InstanceInformationStringFilter
		want    []string
	}{
		{"all", nil, []string{DefaultInstance, "i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2", "i-0aaaaaaaaaaaaaaa3", "mi-0bbbbbbbbbbbbbbb1"}},
		{"online prod", []ssmtypes.InstanceInformationStringFilter{filter("tag:env", "prod"), filter("PingStatus", "Online")},
			[]string{"i-0aaaaaaaaaaaaaaa1", "mi-0bbbbbbbbbbbbbbb1"}},
		{"managed", []ssmtypes.InstanceInformationStringFilter{filter("ResourceType", "ManagedInstance")}, []string{"mi-0bbbbbbbbbbbbbbb1"}},
		{"ids", []ssmtypes.InstanceInformationStringFilter{filter("InstanceIds", "i-0aaaaaaaaaaaaaaa3", "i-0aaaaaaaaaaaaaaa2")},
			[]string{"i-0aaaaaaaaaaaaaaa2", "i-0aaaaaaaaaaaaaaa3"}},
		{"Name tag of EC2", []ssmtypes.InstanceInformationStringFilter{filter("tag:Name", "web-1", "db")},
			[]string{"i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa3"}},
		{"tag-key", []ssmtypes.InstanceInformationStringFilter{filter("tag-key", "env"), filter("AgentVersion", "3.2.582.0")},
			[]string{"i-0aaaaaaaaaaaaaaa2"}},
	}
	for _, tc := range cases {
		got, _ := ssmIDs(t, c, tc.filters...)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	out, err := c.DescribeInstanceInformation(context.Background(), &ssm.DescribeInstanceInformationInput{
		Filters: []ssmtypes.InstanceInformationStringFilter{filter("InstanceIds", "mi-0bbbbbbbbbbbbbbb1")}})
	if err != nil || len(out.InstanceInformationList) != 1 {
		t.Fatalf("%v %v", out, err)
	}
	mi := out.InstanceInformationList[0]
	if aws.ToString(mi.Name) != "rack-7" || mi.ResourceType != "ManagedInstance" || mi.PingStatus != ssmtypes.PingStatusOnline ||
		aws.ToString(mi.IPAddress) != "192.168.1.7" || aws.ToString(mi.ComputerName) != "rack-7.lan" || mi.LastPingDateTime == nil {
		t.Errorf("managed instance fields: %+v", mi)
	}

	refusals := []struct {
		in   *ssm.DescribeInstanceInformationInput
		code string
	}{
		{&ssm.DescribeInstanceInformationInput{Filters: []ssmtypes.InstanceInformationStringFilter{filter("Name", "web-1")}}, "InvalidFilterKey"},
		{&ssm.DescribeInstanceInformationInput{Filters: []ssmtypes.InstanceInformationStringFilter{filter("tag-keys", "env")}}, "InvalidFilterKey"},
		{&ssm.DescribeInstanceInformationInput{Filters: []ssmtypes.InstanceInformationStringFilter{filter("PingStatus", "online")}}, "InvalidInstanceInformationFilterValue"},
		{&ssm.DescribeInstanceInformationInput{Filters: []ssmtypes.InstanceInformationStringFilter{filter("ResourceType", "Document")}}, "InvalidInstanceInformationFilterValue"},
		{&ssm.DescribeInstanceInformationInput{Filters: []ssmtypes.InstanceInformationStringFilter{filter("InstanceIds", "i-0ccccccccccccccc9")}}, "InvalidInstanceId"},
		{&ssm.DescribeInstanceInformationInput{MaxResults: aws.Int32(4)}, "ValidationException"},
		{&ssm.DescribeInstanceInformationInput{MaxResults: aws.Int32(51)}, "ValidationException"},
		{&ssm.DescribeInstanceInformationInput{NextToken: aws.String("bm90LW91cnM")}, "InvalidNextToken"},
	}
	for _, r := range refusals {
		if _, err := c.DescribeInstanceInformation(context.Background(), r.in); errCode(err) != r.code {
			t.Errorf("%+v: got %v, want %s", r.in, err, r.code)
		}
	}
}

// TestDescribePagination: pages of at most PageSize whatever MaxResults
// asks, a token valid only for its own query, every instance exactly once.
func TestDescribePagination(t *testing.T) {
	ts := StartTest(t, Options{PageSize: 4})
	var want []string
	for i := range 11 {
		id := fmt.Sprintf("i-0%016x", i+1)
		ts.AddTarget(Target{ID: id, Connected: true, Name: "node", PrivateIP: fmt.Sprintf("10.1.0.%d", i+1)})
		want = append(want, id)
	}
	c := ts.ssmClient(ts.AWSConfig(nil))
	got, pages := ssmIDs(t, c, filter("tag:Name", "node"))
	if !slices.Equal(got, want) || pages != 3 {
		t.Fatalf("SSM: %d pages, %v", pages, got)
	}
	first, err := c.DescribeInstanceInformation(context.Background(), &ssm.DescribeInstanceInformationInput{
		Filters: []ssmtypes.InstanceInformationStringFilter{filter("tag:Name", "node")}})
	if err != nil || first.NextToken == nil {
		t.Fatal(first, err)
	}
	if _, err := c.DescribeInstanceInformation(context.Background(), &ssm.DescribeInstanceInformationInput{
		NextToken: first.NextToken}); errCode(err) != "InvalidNextToken" {
		t.Errorf("a token reused with other filters: %v", err)
	}

	e := ts.ec2Client(ts.AWSConfig(nil))
	var ec2IDs []string
	pages = 0
	p := ec2.NewDescribeInstancesPaginator(e, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(1000),
		Filters: []ec2types.Filter{{Name: aws.String("tag:Name"), Values: []string{"no*"}}}})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range out.Reservations {
			for _, in := range r.Instances {
				ec2IDs = append(ec2IDs, aws.ToString(in.InstanceId))
			}
		}
	}
	if !slices.Equal(ec2IDs, want) || pages != 3 {
		t.Fatalf("EC2: %d pages, %v", pages, ec2IDs)
	}
	if st := ts.Stats(); st.API["DescribeInstances"]["200"] != 3 || st.API["DescribeInstanceInformation"]["200"] != 4 {
		t.Errorf("stats %v", st.API)
	}
}

// TestDescribeInstancesEC2: the EC2 filters, wildcards, XML shapes and
// errors, through the SDK's ec2query client.
func TestDescribeInstancesEC2(t *testing.T) {
	ts := inventoryFake(t)
	e := ts.ec2Client(ts.AWSConfig(nil))
	ids := func(out *ec2.DescribeInstancesOutput) []string {
		var s []string
		for _, r := range out.Reservations {
			for _, in := range r.Instances {
				s = append(s, aws.ToString(in.InstanceId))
			}
		}
		return s
	}
	f := func(name string, values ...string) ec2types.Filter {
		return ec2types.Filter{Name: aws.String(name), Values: values}
	}
	cases := []struct {
		filters []ec2types.Filter
		want    []string
	}{
		{[]ec2types.Filter{f("tag:Name", "web-1")}, []string{"i-0aaaaaaaaaaaaaaa1"}},
		{[]ec2types.Filter{f("tag:Name", "web-*")}, []string{"i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"}},
		{[]ec2types.Filter{f("tag:env", "prod"), f("instance-state-name", "running")}, []string{"i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"}},
		{[]ec2types.Filter{f("private-ip-address", "10.0.0.13")}, []string{"i-0aaaaaaaaaaaaaaa3"}},
		{[]ec2types.Filter{f("private-dns-name", "ip-10-0-0-12.ec2.internal")}, []string{"i-0aaaaaaaaaaaaaaa2"}},
		{[]ec2types.Filter{f("tag:Name", "rack-7")}, nil}, // mi- nodes are not EC2
		{[]ec2types.Filter{f("private-ip-address", "192.168.1.7")}, nil},
	}
	for _, tc := range cases {
		out, err := e.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{Filters: tc.filters})
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(out); !slices.Equal(got, tc.want) {
			t.Errorf("%v: got %v, want %v", tc.filters[0].Name, got, tc.want)
		}
	}
	out, err := e.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0aaaaaaaaaaaaaaa1"}})
	if err != nil || len(out.Reservations) != 1 {
		t.Fatal(out, err)
	}
	in := out.Reservations[0].Instances[0]
	if aws.ToString(in.PrivateIpAddress) != "10.0.0.11" || aws.ToString(in.PrivateDnsName) != "ip-10-0-0-11.ec2.internal" ||
		in.State == nil || in.State.Name != ec2types.InstanceStateNameRunning || len(in.Tags) != 2 ||
		aws.ToString(out.Reservations[0].OwnerId) != "123456789012" {
		t.Errorf("instance fields: %+v", in)
	}

	refusals := []struct {
		in   *ec2.DescribeInstancesInput
		code string
	}{
		{&ec2.DescribeInstancesInput{Filters: []ec2types.Filter{f("name", "web-1")}}, "InvalidParameterValue"},
		{&ec2.DescribeInstancesInput{MaxResults: aws.Int32(4)}, "InvalidParameterValue"},
		{&ec2.DescribeInstancesInput{MaxResults: aws.Int32(5), InstanceIds: []string{"i-0aaaaaaaaaaaaaaa1"}}, "InvalidParameterCombination"},
		{&ec2.DescribeInstancesInput{InstanceIds: []string{"i-0ccccccccccccccc9"}}, "InvalidInstanceID.NotFound"},
		{&ec2.DescribeInstancesInput{InstanceIds: []string{"mi-0bbbbbbbbbbbbbbb1"}}, "InvalidInstanceID.Malformed"},
		{&ec2.DescribeInstancesInput{NextToken: aws.String("garbage")}, "InvalidParameterValue"},
	}
	for _, r := range refusals {
		if _, err := e.DescribeInstances(context.Background(), r.in); errCode(err) != r.code {
			t.Errorf("%+v: got %v, want %s", r.in, err, r.code)
		}
	}

	// An unknown key gets EC2's AuthFailure; an unsigned form EC2's code too.
	badKey := ts.User
	badKey.AccessKeyID = "AKIAUNKNOWN000000000"
	if _, err := ts.ec2Client(ts.AWSConfig(&badKey)).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{}); errCode(err) != "AuthFailure" {
		t.Errorf("unknown key: %v", err)
	}
	resp, err := http.PostForm(ts.URL(), url.Values{"Action": {"DescribeInstances"}, "Version": {"2016-11-15"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("unsigned DescribeInstances: HTTP %d", resp.StatusCode)
	}
}

// TestDescribeSessionPolicy: credentials minted with a session policy get
// exactly what it allows: Describe* with the lookup statement, nothing
// with a StartSession-only one.
func TestDescribeSessionPolicy(t *testing.T) {
	ts := inventoryFake(t)
	ts.IAM.AddRole(iam.Role{Name: "lookup"})
	stsc := sts.NewFromConfig(ts.AWSConfig(nil), func(o *sts.Options) { o.BaseEndpoint = aws.String(ts.URL()) })
	mint := func(policy string) aws.Config {
		out, err := stsc.AssumeRole(context.Background(), &sts.AssumeRoleInput{RoleArn: aws.String(ts.IAM.RoleARN("lookup")),
			RoleSessionName: aws.String("alice"), Policy: aws.String(policy)})
		if err != nil {
			t.Fatal(err)
		}
		c := ts.AWSConfig(nil)
		c.Credentials = staticProvider{aws.Credentials{AccessKeyID: *out.Credentials.AccessKeyId,
			SecretAccessKey: *out.Credentials.SecretAccessKey, SessionToken: *out.Credentials.SessionToken}}
		return c
	}
	lookup := mint(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ssm:DescribeInstanceInformation","ec2:DescribeInstances"],"Resource":"*"}]}`)
	start := mint(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:StartSession","Resource":"*"}]}`)
	if _, err := ts.ssmClient(lookup).DescribeInstanceInformation(context.Background(), &ssm.DescribeInstanceInformationInput{}); err != nil {
		t.Errorf("lookup scope, DescribeInstanceInformation: %v", err)
	}
	if _, err := ts.ec2Client(lookup).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{}); err != nil {
		t.Errorf("lookup scope, DescribeInstances: %v", err)
	}
	if _, err := ts.ssmClient(start).DescribeInstanceInformation(context.Background(), &ssm.DescribeInstanceInformationInput{}); errCode(err) != "AccessDeniedException" {
		t.Errorf("session scope, DescribeInstanceInformation: %v", err)
	}
	if _, err := ts.ec2Client(start).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{}); errCode(err) != "UnauthorizedOperation" ||
		!strings.Contains(err.Error(), "ec2:DescribeInstances") {
		t.Errorf("session scope, DescribeInstances: %v", err)
	}
}

type staticProvider struct{ c aws.Credentials }

func (p staticProvider) Retrieve(context.Context) (aws.Credentials, error) { return p.c, nil }

// TestParseTargetSpec: bin/fakeaws -target's grammar and its refusals.
func TestParseTargetSpec(t *testing.T) {
	tg, err := ParseTargetSpec("i-0aaaaaaaaaaaaaaa1,name=web-1,tag:env=prod,tag:team=a=b,ip=10.0.0.1,dns=ip-10-0-0-1.ec2.internal,ping=ConnectionLost,agent=3.1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Name != "web-1" || tg.Tags["env"] != "prod" || tg.Tags["team"] != "a=b" || tg.PrivateIP != "10.0.0.1" ||
		tg.PrivateDNS != "ip-10-0-0-1.ec2.internal" || tg.Connected || tg.AgentVersion != "3.1.1.0" {
		t.Errorf("%+v", tg)
	}
	if tg, err := ParseTargetSpec("mi-0bbbbbbbbbbbbbbb1"); err != nil || !tg.Connected {
		t.Errorf("plain id: %+v %v", tg, err)
	}
	for _, bad := range []string{"web-1", "i-0aaaaaaaaaaaaaaa1,name", "i-0aaaaaaaaaaaaaaa1,name=", "i-0aaaaaaaaaaaaaaa1,ip=10.0.0",
		"i-0aaaaaaaaaaaaaaa1,ip=::1", "i-0aaaaaaaaaaaaaaa1,ping=online", "i-0aaaaaaaaaaaaaaa1,color=red", "i-0aaaaaaaaaaaaaaa1,tag:=x",
		"i-0aaaaaaaaaaaaaaa1,name=a,name=b", "i-0aaaaaaaaaaaaaaa1,dns=a b", "i-0aaaaaaaaaaaaaaa1,agent=latest"} {
		if _, err := ParseTargetSpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestDescribeNotManaged: an EC2 instance without Systems Manager is in
// EC2's answer only, and naming it to SSM is InvalidInstanceId.
func TestDescribeNotManaged(t *testing.T) {
	ts := inventoryFake(t)
	ts.AddTarget(Target{ID: "i-0aaaaaaaaaaaaaaa7", Name: "legacy", NotManaged: true})
	c := ts.ssmClient(ts.AWSConfig(nil))
	if ids, _ := ssmIDs(t, c, filter("tag:Name", "legacy")); len(ids) != 0 {
		t.Errorf("SSM lists an unmanaged instance: %v", ids)
	}
	if _, err := c.DescribeInstanceInformation(context.Background(), &ssm.DescribeInstanceInformationInput{
		Filters: []ssmtypes.InstanceInformationStringFilter{filter("InstanceIds", "i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa7")}}); errCode(err) != "InvalidInstanceId" {
		t.Errorf("InstanceIds with an unmanaged instance: %v", err)
	}
	out, err := ts.ec2Client(ts.AWSConfig(nil)).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0aaaaaaaaaaaaaaa7"}})
	if err != nil || len(out.Reservations) != 1 {
		t.Fatalf("EC2: %v %v", out, err)
	}
}
