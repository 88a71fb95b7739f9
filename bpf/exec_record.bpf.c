// SPDX-License-Identifier: MIT OR GPL-2.0-only
//
// The exec record: which files each exec loaded, written by the kernel's exec path before the
// new image runs any code, so that the supervisor's image checkpoint can read it from its own
// mapping of the record instead of looking through /proc (docs/exec-record.md).
//
// Only tasks of guarded containers are recorded: a task whose pid namespace, or one of its
// ancestors, is in `guarded_pidns_v1` (the keeper adds a container's pid namespace before its
// first exec is answered and removes it when the container's last notify fd hangs up). Every
// other exec returns after reading its pid's namespace level (0 on the host), or, in another
// pid namespace, after clearing any entry its process had.
//
// Attached as BTF-typed tracepoints (tp_btf, through a BPF link): no tracefs needed.
//
// On sched_process_exec: the new image's executable file (mm->exe_file, what
// /proc/PID/exe shows, named by its inode as stat names it: on an overlay filesystem the
// overlay's inode) and the file mapped at AT_BASE (the interpreter the kernel loaded, named as
// /proc/PID/maps names it; none for a static program), each with the inode's size,
// modification and change time, stored in the thread-group id's slot of an array that the
// supervisor maps into its memory. On sched_process_exit of a group leader in a pid namespace
// other than the initial one (only those can have an entry): its entry is emptied, before its
// pid can be given to another process. The map is read only by a process that also holds both
// attachments, so no entry outlives the programs that keep it true.
//
// Only the fields used are declared; CO-RE relocates them against the running kernel's BTF.
// Dual-licensed so that the kernel grants the GPL-only helpers (bpf_probe_read_kernel).

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

typedef __u32 dev_t;
typedef __s64 time64_t;
typedef long long loff_t;

struct timespec64 {
	time64_t tv_sec;
	long tv_nsec;
} __attribute__((preserve_access_index));

struct super_block {
	dev_t s_dev;
} __attribute__((preserve_access_index));

// Since 6.11: the times as separate seconds and nanoseconds (the change time's nanoseconds
// carry a flag in their top bit since 6.13).
struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
	loff_t i_size;
	time64_t i_mtime_sec;
	time64_t i_ctime_sec;
	__u32 i_mtime_nsec;
	__u32 i_ctime_nsec;
} __attribute__((preserve_access_index));

// 6.6 to 6.10: the change time hidden as __i_ctime, the modification time from 6.7.
struct inode___v66 {
	struct timespec64 __i_ctime;
	struct timespec64 __i_mtime;
	struct timespec64 i_mtime;
} __attribute__((preserve_access_index));

// Before 6.6.
struct inode___v50 {
	struct timespec64 i_mtime;
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct vm_area_struct {
	struct file *vm_file;
} __attribute__((preserve_access_index));

struct mm_struct {
	struct file *exe_file;
	unsigned long saved_auxv[2];
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct pid_namespace {
	struct pid_namespace *parent;
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	unsigned int level;
	struct upid numbers[1];
} __attribute__((preserve_access_index));

struct task_struct {
	struct mm_struct *mm;
	struct pid *thread_pid;
} __attribute__((preserve_access_index));

struct linux_binprm {
	char buf[256];
	const char *filename;
} __attribute__((preserve_access_index));

// EI_CLASS in an ELF header: a 32-bit program's (i386, x32) auxiliary vector is saved as pairs
// of 32-bit words.
#define EI_CLASS 4
#define ELFCLASS32 1

// One file as the record has it; laid out as `record::FileRecord` in Rust.
struct file_record {
	__u64 ino;
	__s64 size;
	__s64 mtime_sec;
	__s64 ctime_sec;
	__u32 mtime_nsec;
	__u32 ctime_nsec;
	// The kernel's encoding (major << 20 | minor); 0: no file.
	__u32 dev;
	__u32 pad;
};

struct exec_record {
	struct file_record program;
	struct file_record interpreter;
	// When the exec happened (CLOCK_BOOTTIME, ns): a process's execs have different ones,
	// and nothing in the process can change it (the supervisor tells images apart by it).
	__u64 seq;
};

// One slot of the record, keyed by the low bits of the thread-group id (in the initial pid
// namespace) and naming the whole id, so that the worker reads it from its own mapping of the
// map, without a system call (`sys::ReadOnlyWords`, read as `record::reader::read_slot`
// does). Two rules keep an entry true:
// - `owner` is set to a process's id only by that process's exec, together with the entry,
//   while the exec holds the slot; it is cleared (compare-and-exchange from that id to 0,
//   without holding the slot, so it cannot fail for want of the slot) at the process's next
//   exec before anything else, and as its group leader exits. So a slot never names a process
//   with an entry of an earlier image of it, or of an ended process with its id.
// - `seq` is the slot's lock and version for the entry's writers: odd while one writes,
//   raised by one on taking and on leaving the slot (compare-and-exchange: full barriers), so
//   a reader that sees the same even value before and after its copy read one writer's whole
//   entry.
// Laid out as the `SLOT_*` words of `sys::bpf` in Rust: 16 words.
struct record_slot {
	__u64 seq;
	// Whose latest exec the entry is (its thread-group id); 0: nobody's.
	__u64 owner;
	struct exec_record rec;
	__u64 pad;
};

// RECORD_SLOTS slots of 128 bytes: 512 KiB of kernel memory, allocated when the map is made.
// An entry has to last only from an exec to its image checkpoint (microseconds): two processes
// whose ids share a slot take it in turn, and the one that lost it is looked at through /proc.
// The map's name says the layout of `struct record_slot` (supervisor::record checks it):
// change both together.
#define RECORD_SLOTS 4096
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, RECORD_SLOTS);
	__type(key, __u32);
	__type(value, struct record_slot);
} exec_record_v3 SEC(".maps");

// Tries to take `slot` for writing (a few times, when another program took and left it in
// between); its odd `seq` when taken, 0 when another program is writing it.
static __always_inline __u64 take(struct record_slot *slot)
{
	for (int i = 0; i < 4; i++) {
		__u64 seq = *(volatile __u64 *)&slot->seq;
		if (seq & 1)
			return 0;
		if (__sync_val_compare_and_swap(&slot->seq, seq, seq + 1) == seq)
			return seq + 1;
	}
	return 0;
}

// Leaves a slot taken by `take`, as a full barrier after every write to it.
static __always_inline void leave(struct record_slot *slot, __u64 held)
{
	__sync_val_compare_and_swap(&slot->seq, held, held + 1);
}

// The slot of `tgid`.
static __always_inline struct record_slot *slot_of(__u32 tgid)
{
	__u32 key = tgid & (RECORD_SLOTS - 1);
	return bpf_map_lookup_elem(&exec_record_v3, &key);
}

// Clears the slot's owner if it is `tgid` (its previous image's entry, or a process that
// ends); the entry's words stay, naming nobody. A first plain look spares the locked
// instruction where the slot is another's: nothing else names `tgid` the owner meanwhile (only
// its own exec does, which is this one or after this).
static __always_inline void forget(__u32 tgid)
{
	struct record_slot *slot = slot_of(tgid);
	if (slot && *(volatile __u64 *)&slot->owner == tgid)
		__sync_val_compare_and_swap(&slot->owner, (__u64)tgid, 0);
}

// The pid namespaces (by inode number, as stat of /proc/PID/ns/pid shows it) whose tasks are
// recorded; the keeper writes it. The value: GUARD_* flags.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} guarded_pidns_v1 SEC(".maps");

// Every exec of the namespace is judged at its exec checkpoint ([detect] exec_checkpoint): one
// that then runs other files than were judged, or that nothing judged, is reported; and
// killed where the container's mode is enforce.
#define GUARD_EXECS_JUDGED 1
#define GUARD_ENFORCE 2

// What the exec checkpoint judged and let run, under the id of the thread that called execve
// (the tracepoint's old_pid); written by the worker before it answers, taken by the exec.
// Laid out as `sys::bpf::RawApproval`. The program as the record names it, without its device
// (stat and the inode name a btrfs subvolume's files by different devices): inode number, size
// and change time, which no one can set; the interpreter by size and change time (its mapping
// names an overlay's layer file, whose inode number is not the one stat shows, but whose size
// and times are), or none.
struct approval {
	__u64 ino;
	__s64 size;
	__s64 ctime_sec;
	__u32 ctime_nsec;
	// 1: the program has an interpreter, described below; 0: none is loaded.
	__u32 has_interp;
	__s64 interp_size;
	__s64 interp_ctime_sec;
	__u32 interp_ctime_nsec;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct approval);
} approved_v1 SEC(".maps");

// A killed exec, for the supervisor's event; laid out as `record::RawKill`.
struct kill {
	__u32 tgid;
	__u32 pidns;
	struct file_record ran;
	struct file_record ran_interp;
	// 0: nothing was judged for this exec; 1: something else was.
	__u32 judged;
	// 1: killed; 0: only reported (audit mode).
	__u32 killed;
	struct approval approved;
	char filename[256];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} kills_v1 SEC(".maps");

// MAX_PID_NS_LEVEL: a pid namespace is at most 32 levels below the initial one.
#define MAX_PID_NS_LEVEL 32

// The flags of the guarded pid namespace `task` is in or below (a container that made pid
// namespaces of its own stays guarded), and its inode number in `inum`; none when it is in no
// guarded one. Reads only the level for a task of the initial one.
static __always_inline __u32 *guarded(struct task_struct *task, __u32 *inum)
{
	// Direct loads through the task's BTF-typed pointer (no helper call): the host's execs
	// stop here.
	struct pid *pid = task->thread_pid;
	if (!pid)
		return 0;
	unsigned int level = pid->level;
	if (level == 0)
		return 0;
	if (level > MAX_PID_NS_LEVEL)
		level = MAX_PID_NS_LEVEL;
	// The task's own pid namespace, then its parents up to (not including) the initial one.
	struct upid *numbers = __builtin_preserve_access_index(&pid->numbers[0]);
	struct pid_namespace *ns = 0;
	if (bpf_probe_read_kernel(&ns, sizeof(ns), &numbers[level].ns) || !ns)
		return 0;
	for (unsigned int i = 0; i < MAX_PID_NS_LEVEL && i < level; i++) {
		*inum = BPF_CORE_READ(ns, ns.inum);
		__u32 *flags = bpf_map_lookup_elem(&guarded_pidns_v1, inum);
		if (flags)
			return flags;
		ns = BPF_CORE_READ(ns, parent);
		if (!ns)
			return 0;
	}
	return 0;
}

// Whether the exec loads the files that were judged.
static __always_inline int as_judged(const struct approval *a, const struct exec_record *r)
{
	const struct file_record *p = &r->program, *i = &r->interpreter;
	if (p->dev == 0 || a->ino != p->ino || a->size != p->size || a->ctime_sec != p->ctime_sec ||
	    a->ctime_nsec != p->ctime_nsec)
		return 0;
	if (!a->has_interp)
		return i->dev == 0;
	return i->dev != 0 && a->interp_size == i->size && a->interp_ctime_sec == i->ctime_sec &&
	       a->interp_ctime_nsec == i->ctime_nsec;
}

// Kills the task that just executed, if `kill` (it has not returned to user space: no
// instruction of the new image runs), and tells the supervisor what ran.
static __always_inline void not_as_judged(__u32 tgid, __u32 inum, const struct exec_record *ran,
					  const struct approval *approved,
					  struct linux_binprm *bprm, int kill)
{
	if (kill)
		bpf_send_signal(9);
	struct kill *k = bpf_ringbuf_reserve(&kills_v1, sizeof(*k), 0);
	if (!k)
		return;
	k->tgid = tgid;
	k->pidns = inum;
	k->ran = ran->program;
	k->ran_interp = ran->interpreter;
	k->judged = approved != 0;
	k->killed = kill;
	if (approved)
		k->approved = *approved;
	else
		__builtin_memset(&k->approved, 0, sizeof(k->approved));
	if (bpf_probe_read_kernel_str(k->filename, sizeof(k->filename), bprm->filename) < 0)
		k->filename[0] = 0;
	bpf_ringbuf_submit(k, 0);
}

#define AT_BASE 7
// Pairs looked at in saved_auxv at most: AT_BASE is the ninth pair on x86-64 and arm64 (after
// the architecture's two, AT_HWCAP, AT_PAGESZ, AT_CLKTCK and the program headers' three), the
// tenth for i386; the kernel's vector holds 23 pairs or more (46 words on arm64 6.1).
#define AUXV_PAIRS 16

static __always_inline void read_file(struct file *f, struct file_record *r)
{
	struct inode *i = f->f_inode;
	if (!i)
		return;
	r->ino = i->i_ino;
	r->size = i->i_size;
	if (bpf_core_field_exists(i->i_ctime_sec)) {
		r->ctime_sec = i->i_ctime_sec;
		r->ctime_nsec = i->i_ctime_nsec & 0x7fffffff;
	} else {
		struct inode___v66 *i66 = (void *)i;
		struct inode___v50 *i50 = (void *)i;
		if (bpf_core_field_exists(i66->__i_ctime)) {
			r->ctime_sec = i66->__i_ctime.tv_sec;
			r->ctime_nsec = (__u32)i66->__i_ctime.tv_nsec;
		} else {
			r->ctime_sec = i50->i_ctime.tv_sec;
			r->ctime_nsec = (__u32)i50->i_ctime.tv_nsec;
		}
	}
	if (bpf_core_field_exists(i->i_mtime_sec)) {
		r->mtime_sec = i->i_mtime_sec;
		r->mtime_nsec = i->i_mtime_nsec;
	} else {
		struct inode___v66 *i66 = (void *)i;
		if (bpf_core_field_exists(i66->__i_mtime)) {
			r->mtime_sec = i66->__i_mtime.tv_sec;
			r->mtime_nsec = (__u32)i66->__i_mtime.tv_nsec;
		} else {
			r->mtime_sec = i66->i_mtime.tv_sec;
			r->mtime_nsec = (__u32)i66->i_mtime.tv_nsec;
		}
	}
	// No device: no file (a load that faults reads 0).
	struct super_block *sb = i->i_sb;
	r->dev = sb ? sb->s_dev : 0;
}

static long mapped_file(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct file *f = vma->vm_file;
	if (f)
		read_file(f, data);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(record_exec, struct task_struct *unused, int old_pid, struct linux_binprm *bprm)
{
	struct task_struct *task = bpf_get_current_task_btf();
	// The host's tasks are never recorded (their pid level never changes).
	struct pid *p = task->thread_pid;
	if (!p || p->level == 0)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	// Whatever follows, the previous image's entry goes: one written while this namespace was
	// guarded must not describe a later image, and a record that cannot be written whole
	// must not leave it behind.
	forget(tgid);
	__u32 inum = 0;
	__u32 *flags = guarded(task, &inum);
	if (!flags)
		return 0;
	__u32 confirm = *flags & GUARD_EXECS_JUDGED;
	// The judgment of this exec, taken: it is for this exec only. (Only the exec checkpoint
	// writes them, so where it is off there is none to look for.)
	struct approval approved = {};
	int judged = 0;
	if (confirm) {
		__u32 caller = old_pid;
		struct approval *a = bpf_map_lookup_elem(&approved_v1, &caller);
		if (a) {
			approved = *a;
			judged = 1;
			bpf_map_delete_elem(&approved_v1, &caller);
		}
	}

	struct mm_struct *mm = task->mm;
	if (!mm)
		return 0;
	struct exec_record rec = {};
	struct file *exe = mm->exe_file;
	if (exe)
		read_file(exe, &rec.program);

	// Direct loads through the kernel's types (no helper call), at offsets fixed when the loops
	// are unrolled; a kernel whose vector is shorter than they read records no interpreter
	// (and such images are looked at through /proc).
	unsigned long base = 0;
	unsigned long *auxv = __builtin_preserve_access_index(&mm->saved_auxv[0]);
	__u32 words = bpf_core_field_size(mm->saved_auxv) / sizeof(unsigned long);
	if (words < 2 * AUXV_PAIRS) {
	} else if (bprm->buf[EI_CLASS] == ELFCLASS32) {
		// Pairs of 32-bit words, two to an unsigned long.
		__u32 *auxv32 = (__u32 *)auxv;
#pragma unroll
		for (__u32 i = 0; i < AUXV_PAIRS; i++) {
			__u32 type = auxv32[2 * i];
			if (type == 0)
				break;
			if (type == AT_BASE) {
				base = auxv32[2 * i + 1];
				break;
			}
		}
	} else {
#pragma unroll
		for (__u32 i = 0; i < AUXV_PAIRS; i++) {
			unsigned long type = auxv[2 * i];
			if (type == 0)
				break;
			if (type == AT_BASE) {
				base = auxv[2 * i + 1];
				break;
			}
		}
	}
	if (base)
		bpf_find_vma(task, base, mapped_file, &rec.interpreter, 0);
	rec.seq = bpf_ktime_get_boot_ns();
	if (confirm && !(judged && as_judged(&approved, &rec))) {
		int kill = *flags & GUARD_ENFORCE;
		not_as_judged(tgid, inum, &rec, judged ? &approved : 0, bprm, kill);
		if (kill)
			return 0;
	}
	struct record_slot *slot = slot_of(tgid);
	if (!slot)
		return 0;
	__u64 held = take(slot);
	if (!held)
		return 0;
	slot->owner = tgid;
	slot->rec = rec;
	leave(slot, held);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int forget_exit(void *ctx)
{
	// A task of the initial pid namespace was never recorded. Any other is forgotten whether
	// its namespace is still guarded or not: no entry outlives its process.
	struct pid *p = bpf_get_current_task_btf()->thread_pid;
	if (!p || p->level == 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = (__u32)id, tgid = id >> 32;
	if (pid == tgid)
		forget(tgid);
	// An approval the thread's last exec did not take (the exec failed after it was judged,
	// or its namespace's execs are not confirmed) ends with the thread, so that a later thread
	// given its id never finds it. Whatever the namespace's flags say now: they can change
	// while the thread lives. (About 0.3 µs; a lookup first costs nearly as much.)
	bpf_map_delete_elem(&approved_v1, &pid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
