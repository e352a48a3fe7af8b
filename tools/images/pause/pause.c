/*
 * The pod sandbox process: it holds the pod's namespaces and does nothing else. It sleeps until
 * a signal arrives, reaps any orphaned child (it is PID 1 of the pod when the PID namespace is
 * shared), and exits 0 on SIGINT or SIGTERM.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_stop(int sig) {
	(void)sig;
	stop = 1;
}

static void on_child(int sig) {
	(void)sig;
	int saved = errno;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
	errno = saved;
}

static int handle(int sig, void (*fn)(int), int flags) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("journey pause");
		return 0;
	}
	if (getpid() != 1) {
		fprintf(stderr, "pause: warning: not PID 1\n");
	}
	if (handle(SIGINT, on_stop, 0) || handle(SIGTERM, on_stop, 0) ||
	    handle(SIGCHLD, on_child, SA_NOCLDSTOP)) {
		perror("pause: sigaction");
		return 1;
	}
	while (!stop) {
		pause();
	}
	return 0;
}
