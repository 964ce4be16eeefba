/* fetch.c - one verified download with resume and retry (libcurl's easy API; see fetch.h).
 *
 * Trust boundary: the bytes come from the network and are trusted only after their size and
 * SHA-256 match what a signed release manifest says; until then they sit in a file the caller
 * names (under its own staging or cache directory) and nothing else reads them. A server that
 * sends more than the expected size is cut off; one that ignores a Range request is restarted
 * from zero. Blocking, any thread; no globals besides libcurl's.
 */
#include "fetch.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"
#include "sha256.h"

struct sink {
	int fd;
	uint64_t have; /* bytes in the file */
	uint64_t size; /* the most we accept */
	int too_big;
	int wfail;
	fetch_progress_fn progress;
	void *ud;
};

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
	struct sink *s = ud;
	size_t len = sz * n;
	if (s->have + len > s->size) {
		s->too_big = 1;
		return 0; /* aborts the transfer */
	}
	if (fd_write_all(s->fd, p, len) < 0) {
		s->wfail = 1;
		return 0;
	}
	s->have += len;
	if (s->progress)
		s->progress(s->ud, s->have, s->size);
	return len;
}

int fetch_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

/* One transfer from s->have on. The curl result. */
static CURLcode transfer(const char *url, struct sink *s, long *ret_status)
{
	CURL *c = curl_easy_init();
	if (!c)
		return CURLE_OUT_OF_MEMORY;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "file,http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
	/* a stalled transfer: under 1 byte/s for 60 s */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "capsem-update");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
	if (s->have)
		curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)s->have);
	CURLcode rc = curl_easy_perform(c);
	*ret_status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, ret_status);
	curl_easy_cleanup(c);
	return rc;
}

static int check(const char *path, uint64_t size, const char *sha256, char *err, size_t errlen)
{
	char hex[SHA256_HEX_LEN + 1];
	uint64_t got = 0;
	int r = sha256_hex_file(path, hex, &got);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	if (got != size || !streq(hex, sha256)) {
		if (got != size)
			snprintf(err, errlen, "%llu bytes, expected %llu", (unsigned long long)got,
				 (unsigned long long)size);
		else
			snprintf(err, errlen, "SHA-256 %.16s..., expected %.16s...", hex, sha256);
		unlink(path);
		return -EBADMSG;
	}
	return 0;
}

int fetch_verified(const char *url, const char *path, uint64_t size, const char *sha256,
		   fetch_progress_fn progress, void *ud, char *err, size_t errlen)
{
	char dummy[1];
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = 0;
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = negative_errno();
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	struct sink s = {
		.fd = fd, .have = (uint64_t)st.st_size, .size = size, .progress = progress, .ud = ud
	};
	if (s.have > size) {
		/* not a prefix of what we want */
		if (ftruncate(fd, 0) < 0)
			return negative_errno();
		s.have = 0;
	}
	for (int attempt = 0; attempt < FETCH_ATTEMPTS && s.have < size; attempt++) {
		long status = 0;
		if (attempt) {
			struct timespec ts = { 1 << (attempt - 1), 0 }; /* back-off between tries */
			nanosleep(&ts, NULL);
		}
		if (lseek(fd, (off_t)s.have, SEEK_SET) < 0)
			return negative_errno();
		CURLcode rc = transfer(url, &s, &status);
		if (s.wfail) {
			snprintf(err, errlen, "%s: cannot write", path);
			return -EIO;
		}
		if (s.too_big) {
			snprintf(err, errlen, "the server sent more than the %llu bytes expected",
				 (unsigned long long)size);
			unlink(path);
			return -EBADMSG;
		}
		if (rc == CURLE_RANGE_ERROR) {
			/* the server ignores ranges: start over */
			if (ftruncate(fd, 0) < 0)
				return negative_errno();
			s.have = 0;
			continue;
		}
		if (rc == CURLE_OK)
			break;
		snprintf(err, errlen, "%s (HTTP %ld), after %llu of %llu bytes",
			 curl_easy_strerror(rc), status, (unsigned long long)s.have,
			 (unsigned long long)size);
		/* permanent answers: no retry */
		if (rc == CURLE_REMOTE_FILE_NOT_FOUND || rc == CURLE_FILE_COULDNT_READ_FILE ||
		    rc == CURLE_UNSUPPORTED_PROTOCOL || rc == CURLE_URL_MALFORMAT ||
		    (rc == CURLE_HTTP_RETURNED_ERROR && status >= 400 && status < 500 &&
		     status != 408 && status != 429))
			return -EIO;
	}
	if (s.have < size) {
		if (!err[0])
			snprintf(err, errlen, "the transfer ended after %llu of %llu bytes",
				 (unsigned long long)s.have, (unsigned long long)size);
		/* the last transfer ended "successfully" short: keep the bytes for a resume */
		return -EIO;
	}
	return check(path, size, sha256, err, errlen);
}

struct mem {
	char *p;
	size_t n, max;
	int too_big;
};

static size_t on_mem(char *p, size_t sz, size_t n, void *ud)
{
	struct mem *m = ud;
	size_t len = sz * n;
	if (m->n + len > m->max) {
		m->too_big = 1;
		return 0;
	}
	memcpy(m->p + m->n, p, len);
	m->n += len;
	return len;
}

int fetch_small(const char *url, size_t max, char **ret, size_t *ret_len, char *err, size_t errlen)
{
	struct mem m = { .p = malloc(max + 1), .max = max };
	long status = 0;
	if (!m.p)
		return -ENOMEM;
	CURL *c = curl_easy_init();
	if (!c) {
		free(m.p);
		return -ENOMEM;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "file,http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "capsem-update");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_mem);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &m);
	CURLcode rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	if (m.too_big || rc != CURLE_OK) {
		if (err && errlen)
			snprintf(err, errlen, "%s: %s", url,
				 m.too_big ? "larger than expected" : curl_easy_strerror(rc));
		free(m.p);
		return m.too_big ? -EFBIG : -EIO;
	}
	m.p[m.n] = 0;
	*ret = m.p;
	*ret_len = m.n;
	return 0;
}
