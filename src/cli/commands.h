/* commands.h - the capsem subcommands, dispatched by capsem.c. Each parses its own arguments
 * and returns the process exit status; argv[0] is the subcommand's name. */
#pragma once

int cmd_run(int argc, char **argv);
int cmd_run_daemon(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_shell(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_suspend(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_restart(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_purge(int argc, char **argv);
int cmd_persist(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_events(int argc, char **argv);
int cmd_cp(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_doctor(int argc, char **argv);
/* capsem doctor: the host's checks (cmd-host.c), or with a VM, capsem-doctor inside it
 * (cmd-image.c); capsem.c picks one. */
int cmd_doctor_vm(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_fork(int argc, char **argv);
int cmd_install(int argc, char **argv);
int cmd_uninstall(int argc, char **argv);
int cmd_policy(int argc, char **argv);
int cmd_setup(int argc, char **argv);
int cmd_update(int argc, char **argv);
int cmd_ui(int argc, char **argv);
