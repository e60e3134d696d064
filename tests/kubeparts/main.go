// Command kubeparts is the upstream kubelet, kube-proxy, kube-controller-manager
// and kube-scheduler of one Kubernetes release in one binary, for hacluster's
// virtual-machine cluster (tests and bench only; see README.md).
//
//	kubeparts kubelet [flags]                  -> app.NewKubeletCommand
//	kubeparts kube-proxy [flags]               -> app.NewProxyCommand
//	kubeparts kube-controller-manager [flags]  -> app.NewControllerManagerCommand
//	kubeparts kube-scheduler [flags]           -> app.NewSchedulerCommand
//
// Each is the upstream command unchanged, run with cli.Run and the same blank
// imports as upstream's main packages. One binary: the four share most of
// their packages, so one build and one link instead of four.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	_ "time/tzdata" // for CronJob time zones
)

func main() {
	commands := map[string]func() *cobra.Command{
		"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
		"kube-proxy":              proxy.NewProxyCommand,
		"kube-controller-manager": controllermanager.NewControllerManagerCommand,
		"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	}
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: kubeparts kubelet|kube-proxy|kube-controller-manager|kube-scheduler [flags]")
		os.Exit(2)
	}
	command := commands[os.Args[1]]()
	command.SetArgs(os.Args[2:])
	os.Exit(cli.Run(command))
}
