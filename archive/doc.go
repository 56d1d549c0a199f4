// Package archive carries images across an air gap: it exports cached or
// local content as a standard OCI image-layout tar archive, and imports
// such archives (also those written by `skopeo copy ... oci-archive:`)
// and `docker save` archives into the store.
//
// # Where it runs
//
// Both run inside the server, reached through the admin API, the archive
// streaming over HTTP (POST /admin/v1/export answers with the tar; POST
// /admin/v1/import reads it as the request body). A running regcache
// holds the metadata database's lock, so a command reading the data
// directory could not run beside it; going through the server, an
// operator imports into the lab's running registry from any machine with
// `regcache import lab.tar --server ...`, and export reads through the
// puller, so content not cached yet is fetched on the way (unless the
// registry is offline).
//
// # Export
//
// The archive holds oci-layout, every blob under blobs/sha256/ and
// index.json last. index.json lists each reference's top manifest (an
// index keeps all its platforms) with org.opencontainers.image.ref.name
// and io.containerd.image.name set to "<repository>:<tag>" (so that
// `skopeo copy oci-archive:lab.tar:hub/app:1 ...` finds it), and the
// referrers of every exported manifest (signatures, SBOMs), each with
// io.regcache.repository naming its repository. Every blob is hashed as it
// is written: a stored blob that no longer matches its digest stops the
// export, naming it. Blobs listed in a skip-present inventory (what the
// receiving registry holds: `regcache export --inventory` there) are left
// out; such an archive is for that registry only.
//
// # Import
//
// The archive is read once, as a stream. Each blob is written through
// storage.Writer (the one ingest path: size and digest verified as the
// bytes arrive) and staged: durable, but invisible. A blob the store
// holds already is hashed and not written again. Only when the whole
// archive has been read and checked (every digest, every manifest's
// references present in the archive or the store with the sizes the
// manifests state, every docker layer matching its image's diff_ids) are
// the staged blobs committed and the images linked and tagged, one
// repository per transaction. On any failure every staged blob is
// removed: nothing of an archive that fails verification is stored, and
// the error names the blob. Memory holds the names and digests, never the
// bytes; a gzip-compressed archive is read as well.
package archive
