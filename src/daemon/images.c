/* images.c - the installed guest images (<images_dir>/<name>/manifest.json, written by
 * capsem-builder, and the package's read-only ones under capsem_system_images_dir(), hidden by a
 * user's image of the same name): GET /images lists them with what uses them, DELETE
 * /images/{name} removes a user's one unless a running VM uses it, and images_default() picks
 * the image of a VM that names none (the full Debian image once built, the minimal one
 * otherwise).
 *
 * A VM that already booted keeps its open files when its image is deleted (capsem-vm and QEMU
 * hold them); a stopped VM whose image is gone fails its next start with "image not found".
 * Trust boundary: API clients (the name is checked before it becomes a path); the images
 * directory is the user's (manifests parsed by manifest.c). Thread: the loop (a delete removes a
 * directory of a few files; a large rootfs is one unlink).
 */
#include "images.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "fdutil.h"
#include "home.h"
#include "macro.h"
#include "manifest.h"
#include "vmspec.h"

const char *images_default(const char *images_dir)
{
	_cleanup_free_ char *m = NULL, *dir = NULL;
	const char *pin = getenv("CAPSEM_IMAGE");
	if (pin && vmspec_name_valid(pin))
		return pin;
	if (capsem_image_find(images_dir, IMAGES_FULL, &dir) >= 0 &&
	    asprintf(&m, "%s/" MANIFEST_FILENAME, dir) >= 0 && access(m, F_OK) == 0)
		return IMAGES_FULL;
	return IMAGES_MINIMAL;
}

/* The ids (or names) of the running VMs whose spec names image. NULL when none. */
static char *users_of(struct vmctl *vms, const char *image)
{
	char *s = NULL;
	for (struct vm *vm = vmctl_first(vms); vm; vm = vmctl_next(vm)) {
		const struct vm_record *r = vm_record(vm);
		if (!r->spec.image || !streq(r->spec.image, image) ||
		    (r->state != VM_RUNNING && r->state != VM_CREATING && r->state != VM_STOPPING))
			continue;
		char *t = NULL;
		if (asprintf(&t, "%s%s%s", strempty(s), s ? ", " : "",
			     r->spec.name ? r->spec.name : r->id) < 0) {
			free(s);
			return NULL;
		}
		free(s);
		s = t;
	}
	return s;
}

static json_t *in_use_json(struct vmctl *vms, const char *image)
{
	json_t *a = json_array();
	for (struct vm *vm = vmctl_first(vms); a && vm; vm = vmctl_next(vm)) {
		const struct vm_record *r = vm_record(vm);
		if (r->spec.image && streq(r->spec.image, image) && r->state == VM_RUNNING)
			json_array_append_new(a, json_string(r->id));
	}
	return a;
}

/* The fork images whose base is name, as "a, b" (NULL when none). */
static char *forks_of(const char *images_dir, const char *name)
{
	char *s = NULL;
	_cleanup_closedir_ DIR *d = opendir(images_dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		_cleanup_free_ char *dir = NULL;
		_cleanup_manifest_ struct manifest *m = NULL;
		if (e->d_name[0] == '.' || streq(e->d_name, name) ||
		    asprintf(&dir, "%s/%s", images_dir, e->d_name) < 0)
			continue;
		/* the fork's own manifest only: loading it would load the base too */
		_cleanup_free_ char *mp = NULL, *text = NULL;
		size_t len = 0;
		if (asprintf(&mp, "%s/" MANIFEST_FILENAME, dir) < 0 ||
		    read_file_small(mp, MANIFEST_MAX_BYTES, &text, &len) < 0 ||
		    manifest_parse(text, len, dir, mp, &m, NULL) < 0 || !m->base ||
		    !streq(m->base, name))
			continue;
		char *t = NULL;
		if (asprintf(&t, "%s%s%s", strempty(s), s ? ", " : "", e->d_name) < 0)
			break;
		free(s);
		s = t;
	}
	return s;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the image names in dir (not yet in names[0..*n)) to names. */
static void collect_names(const char *dir, char **names, size_t cap, size_t *n)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *e;
	if (!d)
		return; /* no images there yet */
	while ((e = readdir(d)) && *n < cap) {
		int seen = 0;
		if (e->d_name[0] == '.' || !vmspec_name_valid(e->d_name))
			continue;
		for (size_t i = 0; i < *n && !seen; i++)
			seen = streq(names[i], e->d_name);
		if (!seen && !(names[*n] = strdup(e->d_name)))
			break;
		if (!seen)
			(*n)++;
	}
}

json_t *images_list(const char *images_dir, struct vmctl *vms)
{
	json_t *arr = json_array();
	char *names[256];
	size_t n = 0;
	const char *def = images_default(images_dir);
	if (!arr)
		return NULL;
	collect_names(images_dir, names, ELEMENTSOF(names), &n);
	collect_names(capsem_system_images_dir(), names, ELEMENTSOF(names), &n);
	qsort(names, n, sizeof(char *), cmp_str);
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *dir = NULL;
		_cleanup_manifest_ struct manifest *m = NULL;
		struct stat st;
		int sys = capsem_image_find(images_dir, names[i], &dir);
		if (sys < 0 || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
			free(names[i]);
			continue;
		}
		int r = manifest_load(dir, &m);
		json_t *o;
		if (r < 0) {
			o = json_pack("{s:s, s:s, s:b, s:b, s:s}", "name", names[i], "dir", dir,
				      "default", 0, "system", sys, "error",
				      r == -ENOENT
					      ? "no manifest.json, or a fork whose base image is "
						"not installed"
					      : "unreadable manifest.json");
		} else {
			/* a fork's size is its own files; its base's are counted with the base */
			uint64_t size = m->base ? m->disk.size + m->workspace.size
						: m->kernel.size + m->initrd.size + m->rootfs.size;
			o = json_pack("{s:s, s:s, s:b, s:b, s:s, s:s?, s:s?, s:s?, s:I, s:o, s:s?, "
				      "s:s?, s:s?}",
				      "name", names[i], "dir", dir, "default", streq(names[i], def),
				      "system", sys, "arch", m->arch, "created", m->created,
				      "kernel", m->kernel.version, "rootfs", m->rootfs.file, "size",
				      (json_int_t)size, "in_use", in_use_json(vms, names[i]),
				      "base", m->base, "parent_vm", m->parent_vm, "description",
				      m->description);
		}
		free(names[i]);
		if (o)
			json_array_append_new(arr, o);
	}
	return arr;
}

int images_delete(const char *images_dir, const char *name, struct vmctl *vms, char **ret_users)
{
	_cleanup_free_ char *dir = NULL, *users = NULL;
	struct stat st;
	if (!vmspec_name_valid(name) || name[0] == '.')
		return -EINVAL;
	if (asprintf(&dir, "%s/%s", images_dir, name) < 0)
		return -ENOMEM;
	if (lstat(dir, &st) < 0) {
		_cleanup_free_ char *sys = NULL;
		int r = negative_errno();
		/* the package's image: removed with the package, not through the API */
		if (r == -ENOENT && capsem_image_find(images_dir, name, &sys) == 1)
			return -EPERM;
		return r;
	}
	if (!S_ISDIR(st.st_mode))
		return -ENOENT;
	users = users_of(vms, name);
	if (users) {
		*ret_users = TAKE_PTR(users);
		return -EBUSY;
	}
	/* a base stays while a fork image needs it; removing a fork never touches its base */
	users = forks_of(images_dir, name);
	if (users) {
		*ret_users = TAKE_PTR(users);
		return -ENOTEMPTY;
	}
	return rm_rf(dir);
}
