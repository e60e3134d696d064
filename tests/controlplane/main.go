// Command kube-apiserver is the upstream Kubernetes API server for hacluster's
// tests, with an etcd server embedded in the same process.
//
// Every command-line argument is passed to the real kube-apiserver command
// (app.NewAPIServerCommand) unchanged, except these, which this wrapper
// consumes:
//
//	--embedded-etcd-dir=DIR   etcd data directory (default: a fresh temp dir,
//	                          removed at exit)
//	--embedded-etcd-host=IP   address etcd listens on (default 127.0.0.1)
//
// If no --etcd-servers flag is given, an etcd server is started on free
// loopback ports (fsync disabled: test data only) and --etcd-servers is set to
// it. If --etcd-servers is given, no etcd is started.
package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"

	_ "time/tzdata" // for timeZone support in CronJob
)

const etcdStartTimeout = 60 * time.Second

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dir, host string) (*embed.Etcd, string, error) {
	clientPort, err := freePort(host)
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort(host)
	if err != nil {
		return nil, "", err
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(peerPort))}

	cfg := embed.NewConfig()
	cfg.Name = "hacluster-test"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{"stderr"}
	// No metrics listener, no pprof: nothing but the client port.
	cfg.ListenMetricsUrls = nil

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", fmt.Errorf("etcd failed: %w", err)
	case <-time.After(etcdStartTimeout):
		e.Server.Stop()
		e.Close()
		return nil, "", fmt.Errorf("etcd not ready after %s", etcdStartTimeout)
	}
	return e, clientURL.String(), nil
}

func main() {
	os.Exit(run())
}

func run() int {
	var (
		etcdDir      string
		etcdHost     = "127.0.0.1"
		haveEtcdFlag bool
		args         []string
	)
	for _, a := range os.Args[1:] {
		switch {
		case strings.HasPrefix(a, "--embedded-etcd-dir="):
			etcdDir = strings.TrimPrefix(a, "--embedded-etcd-dir=")
		case strings.HasPrefix(a, "--embedded-etcd-host="):
			etcdHost = strings.TrimPrefix(a, "--embedded-etcd-host=")
		default:
			if a == "--etcd-servers" || strings.HasPrefix(a, "--etcd-servers=") {
				haveEtcdFlag = true
			}
			args = append(args, a)
		}
	}

	// --help, --version and friends need no etcd.
	needEtcd := !haveEtcdFlag
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "--version" || strings.HasPrefix(a, "--version=") {
			needEtcd = false
		}
	}

	if needEtcd {
		if etcdDir == "" {
			d, err := os.MkdirTemp("", "hacluster-etcd-")
			if err != nil {
				fmt.Fprintln(os.Stderr, "embedded etcd:", err)
				return 1
			}
			defer os.RemoveAll(d)
			etcdDir = d
		}
		e, endpoint, err := startEtcd(etcdDir, etcdHost)
		if err != nil {
			fmt.Fprintln(os.Stderr, "embedded etcd:", err)
			return 1
		}
		defer e.Close()
		fmt.Fprintln(os.Stderr, "embedded etcd ready at", endpoint)
		args = append(args, "--etcd-servers="+endpoint)
	}

	command := app.NewAPIServerCommand()
	command.SetArgs(args)
	return cli.Run(command)
}
