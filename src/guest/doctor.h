/* doctor.h - capsem-doctor: the guest's self-check (doctor.c). */
#pragma once

/* What the doctor knows about the image (/etc/capsem/image.toml, written by capsem-builder). */
#define DOCTOR_IMAGE_TOML "/etc/capsem/image.toml"
#define DOCTOR_CA_PEM "/etc/capsem/ca.pem"
#define DOCTOR_ROOTFS_DIR "/mnt/capsem-rootfs"

/* "capsem-doctor [--json]": run every check, print a table (or JSON) on stdout. Exit status 0
 * when no check failed, 1 when one did, 2 for a usage error. */
int doctor_main(int argc, char **argv);
