/*
 * qos_spank.c - the --qos-* options of sbatch, salloc and srun.
 *
 * At submission (allocator and local contexts, outside an existing job) the plugin
 * runs the planner helper once, as the submitting user:
 *
 *     HELPER [--site SITE] plan --workflow W [--deadline D] [--max-nodes N]
 *            [--exclude-tier T] [--objective O] [--stage-in P] [--stage-out P]
 *
 * The helper prints the placement as KEY=VALUE lines (exit 0), each put into the job
 * control environment; lines starting with '#' are shown to the user. Exit 1 (bad
 * input) or 3 (infeasible): its first line is the reason, and the submission is
 * refused. Anything else (exit 4, a crash, no helper, no answer within the timeout)
 * means the planner is unavailable: the site chooses with on_unavailable=open (submit
 * without a placement, with a warning) or on_unavailable=closed (refuse).
 *
 * plugstack.conf:
 *   required /path/qos_spank.so helper=/path/qos-slurm-plan site=/path/site.toml \
 *            on_unavailable=open timeout=10
 *
 * All the logic is in the Python helper; this file only moves strings.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(qos, 1);

enum { OPT_DEADLINE, OPT_WORKFLOW, OPT_MAX_NODES, OPT_EXCLUDE, OPT_OBJECTIVE,
       OPT_STAGE_IN, OPT_STAGE_OUT, OPT_KEEP, N_OPTS };

/* helper argument for each option, in the order of the enum */
static const char *helper_flag[N_OPTS] = {
	"--deadline", "--workflow", "--max-nodes", "--exclude-tier", "--objective",
	"--stage-in", "--stage-out", "--keep" };
static char *value[N_OPTS];

static char *helper = NULL;
static char *site = NULL;
static int fail_open = 1;
static int timeout_s = 10;

static int set_opt(int val, const char *optarg, int remote)
{
	(void) remote;
	if (val < 0 || val >= N_OPTS)
		return -1;
	free(value[val]);
	/* a flag (--qos-keep) has no argument: "1" */
	value[val] = strdup(optarg ? optarg : "1");
	return value[val] ? 0 : -1;
}

static struct spank_option options[] = {
	{ "qos-deadline", "time", "Finish the job within this time (Slurm time syntax, "
	  "e.g. 20:00); the planner picks storage tiers and nodes to meet it",
	  1, OPT_DEADLINE, set_opt },
	{ "qos-workflow", "name", "The workflow model the job runs (qos-plan list); "
	  "required with the other --qos options", 1, OPT_WORKFLOW, set_opt },
	{ "qos-max-nodes", "n", "Use at most n nodes", 1, OPT_MAX_NODES, set_opt },
	{ "qos-exclude-tier", "t[,t]", "Do not place data on these storage tiers",
	  1, OPT_EXCLUDE, set_opt },
	{ "qos-objective", "fastest|frugal", "fastest: the shortest predicted makespan; "
	  "frugal (default): meet the deadline with the fewest nodes and node-local tiers",
	  1, OPT_OBJECTIVE, set_opt },
	{ "qos-stage-in", "path", "Input to stage into the job's node-local tiers",
	  1, OPT_STAGE_IN, set_opt },
	{ "qos-stage-out", "path", "Directory the job's outputs (its last stages' "
	  "directories) are staged out to when it ends", 1, OPT_STAGE_OUT, set_opt },
	{ "qos-keep", NULL, "Keep the job's shared-tier directories after it ends "
	  "(default: removed after the stage-out)", 0, OPT_KEEP, set_opt },
	SPANK_OPTIONS_TABLE_END
};

static void parse_args(int ac, char **av)
{
	for (int i = 0; i < ac; i++) {
		if (!strncmp(av[i], "helper=", 7))
			helper = av[i] + 7;
		else if (!strncmp(av[i], "site=", 5))
			site = av[i] + 5;
		else if (!strcmp(av[i], "on_unavailable=closed"))
			fail_open = 0;
		else if (!strcmp(av[i], "on_unavailable=open"))
			fail_open = 1;
		else if (!strncmp(av[i], "timeout=", 8))
			timeout_s = atoi(av[i] + 8) > 0 ? atoi(av[i] + 8) : 10;
		else
			slurm_error("qos: unknown plugstack.conf argument '%s' (known: helper=, "
				    "site=, on_unavailable=open|closed, timeout=)", av[i]);
	}
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	parse_args(ac, av);
	for (struct spank_option *o = options; o->name; o++)
		if (spank_option_register(sp, o) != ESPANK_SUCCESS)
			return -1;
	return 0;
}

/* Run the helper; its stdout into *out (malloc'd). Returns the exit status, or -1
 * when it could not run or did not finish within the timeout. */
static int run_helper(char *const argv[], char **out)
{
	int fd[2];
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	if (!buf || pipe(fd) < 0) {
		free(buf);
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		close(fd[0]); close(fd[1]); free(buf);
		return -1;
	}
	if (pid == 0) {
		/* its own process group: a timeout kills the helper and its children */
		setpgid(0, 0);
		int devnull = open("/dev/null", O_RDWR);
		dup2(fd[1], STDOUT_FILENO);
		if (devnull >= 0) {
			dup2(devnull, STDIN_FILENO);
			dup2(devnull, STDERR_FILENO);
		}
		close(fd[0]); close(fd[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fd[1]);
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int timed_out = 0;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left = timeout_s * 1000L - ((now.tv_sec - start.tv_sec) * 1000L
						 + (now.tv_nsec - start.tv_nsec) / 1000000L);
		if (left <= 0) {
			timed_out = 1;
			break;
		}
		struct pollfd p = { fd[0], POLLIN, 0 };
		int r = poll(&p, 1, (int) left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			continue;
		if (len + 1024 >= cap) {
			char *n = realloc(buf, cap * 2);
			if (!n)
				break;
			buf = n;
			cap *= 2;
		}
		ssize_t k = read(fd[0], buf + len, cap - len - 1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		len += (size_t) k;
	}
	close(fd[0]);
	buf[len] = '\0';
	*out = buf;
	/* The helper closed its output; it still has until the deadline to exit. */
	int status = 0, reaped = 0;
	while (!timed_out) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid) {
			reaped = 1;
			break;
		}
		if (r < 0 && errno != EINTR)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000L
		    + (now.tv_nsec - start.tv_nsec) / 1000000L >= timeout_s * 1000L)
			timed_out = 1;
		else
			usleep(2000);
	}
	if (!reaped) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	if (timed_out || !reaped || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static void first_line(char *text)
{
	char *nl = strchr(text, '\n');
	if (nl)
		*nl = '\0';
}

/* Refuse the submission with one line. Returning an error from a SPANK callback makes
 * Slurm add its own second line ("spank: required plugin ... failed"); this only runs in
 * the submitting command (sbatch, salloc, srun on the submit host), so it prints the
 * reason and ends that command itself, as sbatch does for its own bad options. */
static int refuse(const char *fmt, const char *msg)
{
	fprintf(stderr, "%s: error: ", program_invocation_short_name);
	fprintf(stderr, fmt, msg);
	fputc('\n', stderr);
	fflush(stderr);
	exit(1);
	return -1;
}

static int unavailable(const char *why)
{
	if (fail_open) {
		slurm_info("qos: %s; submitting without a placement (site policy: "
			   "on_unavailable=open)", why);
		return 0;
	}
	return refuse("qos: %s; submission refused (site policy: on_unavailable=closed)", why);
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void) ac; (void) av;
	spank_context_t ctx = spank_context();
	if (ctx != S_CTX_ALLOCATOR && ctx != S_CTX_LOCAL)
		return 0;
	int any = 0;
	for (int i = 0; i < N_OPTS; i++)
		any |= value[i] != NULL;
	/* srun inside an allocation already has its placement */
	if (!any || (ctx == S_CTX_LOCAL && getenv("SLURM_JOB_ID")))
		return 0;
	if (!helper)
		return unavailable("no helper= in plugstack.conf");

	char *argv[4 + 2 * N_OPTS + 1];
	int n = 0;
	argv[n++] = helper;
	if (site) {
		argv[n++] = "--site";
		argv[n++] = site;
	}
	argv[n++] = "plan";
	for (int i = 0; i < N_OPTS; i++) {
		if (value[i]) {
			argv[n++] = (char *) helper_flag[i];
			argv[n++] = value[i];
		}
	}
	argv[n] = NULL;

	char *out = NULL;
	int rc = run_helper(argv, &out);
	if (rc == 0) {
		/* All lines checked before any is set: a partial placement must never reach
		 * job_submit.lua. */
		for (char *p = out; *p; ) {
			char *nl = strchr(p, '\n');
			size_t n = nl ? (size_t) (nl - p) : strlen(p);
			char *eq = memchr(p, '=', n);
			if (n && p[0] != '#' && (!eq || eq == p)) {
				free(out);
				return unavailable("the planner answered malformed lines");
			}
			p += n + (nl != NULL);
		}
		for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
			if (line[0] == '#') {
				slurm_info("%s", line + 1 + (line[1] == ' '));
				continue;
			}
			char *eq = strchr(line, '=');
			*eq = '\0';
			if (spank_job_control_setenv(sp, line, eq + 1, 1) != ESPANK_SUCCESS) {
				slurm_error("qos: cannot set %s in the job environment", line);
				free(out);
				return -1;
			}
			/* srun that makes its own allocation: its tasks get srun's environment,
			 * not the job control one, so they would not see their placement. */
			if (ctx == S_CTX_LOCAL) {
				char name[256];
				snprintf(name, sizeof name, "SLURM_SPANK_%s", line);
				setenv(name, eq + 1, 1);
			}
		}
		free(out);
		return 0;
	}
	if (rc == 1 || rc == 3) {
		first_line(out);
		return refuse("%s", out[0] ? out : "qos: the planner refused the request");
	}
	char why[512];
	if (rc < 0)
		snprintf(why, sizeof why, "planner helper %s did not answer within %d s",
			 helper, timeout_s);
	else if (rc == 127)
		snprintf(why, sizeof why, "planner helper %s cannot be run", helper);
	else {
		first_line(out);
		snprintf(why, sizeof why, "%s", out && out[0] ? out :
			 "planner unavailable (the helper failed)");
	}
	free(out);
	return unavailable(why);
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void) sp; (void) ac; (void) av;
	for (int i = 0; i < N_OPTS; i++) {
		free(value[i]);
		value[i] = NULL;
	}
	return 0;
}
