// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Bulwark flow control, XDP side: for TCP SYNs (SYN set, ACK clear) to the configured ports,
// pass allowlisted sources, drop blocklisted ones (until their expiry), and hold every other
// source to a token bucket (GCRA form). Everything else passes untouched: this program only
// ever decides about new connections to the mail ports.
//
// Frames in up to two VLAN tags (802.1Q, 802.1ad outside 802.1Q) and IPv6 SYNs behind up to
// IPV6_EXT_MAX extension headers (hop-by-hop, routing, destination options, fragment, AH)
// are judged like plain ones. What the program cannot judge (deeper stacks, a TCP header cut
// by fragmentation, a non-first fragment) passes, and the daemon applies the same blocklist
// and bucket at accept to connections the kernel did not count (mta/src/flow/).
//
// Maps are pinned by name under the loader's pin directory so a restart keeps their state.
// Layouts are mirrored in src/maps.rs; change both together.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define VLAN_MAX_DEPTH 2
#define IPV6_EXT_MAX 8

struct vlan_hdr { __be16 tci; __be16 encapsulated_proto; };
// The common start of hop-by-hop, routing, destination-options and AH headers.
struct ext_hdr { __u8 nexthdr; __u8 hdrlen; };
struct frag_hdr { __u8 nexthdr; __u8 reserved; __be16 frag_off; __be32 identification; };

struct lpm_v4 { __u32 prefixlen; __u8 addr[4]; };
struct lpm_v6 { __u32 prefixlen; __u8 addr[16]; };

// expiry in CLOCK_MONOTONIC ns (0 = never), hits = SYNs dropped by this entry.
struct block_entry { __u64 expires_ns; __u64 hits; };

// tat = GCRA theoretical arrival time (ns); passed/dropped = SYNs of this source.
struct source_entry { __u64 tat; __u64 passed; __u64 dropped; __u64 last_seen_ns; };

// [0] = interval between tokens (ns), [1] = burst tolerance (ns) = interval * burst.
struct rate_config { __u64 interval_ns; __u64 burst_ns; };

enum counter {
	C_SEEN = 0,       // SYNs to a watched port
	C_PASS_ALLOW,     // passed: source allowlisted
	C_PASS_RATE,      // passed: within its bucket
	C_DROP_BLOCK,     // dropped: source blocklisted
	C_DROP_RATE,      // dropped: over its bucket
	C_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct lpm_v4);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bw_allow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct lpm_v6);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bw_allow6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct lpm_v4);
	__type(value, struct block_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bw_block4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct lpm_v6);
	__type(value, struct block_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bw_block6 SEC(".maps");

// Key: the IPv6 /64, or ::ffff:a.b.c.d for IPv4 /32.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u8[16]);
	__type(value, struct source_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bw_sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bw_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rate_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bw_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bw_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&bw_counters, &which);
	if (c)
		*c += 1;
}

static __always_inline int blocked(struct block_entry *b, __u64 now)
{
	if (!b || (b->expires_ns != 0 && b->expires_ns <= now))
		return 0;
	__sync_fetch_and_add(&b->hits, 1);
	return 1;
}

// GCRA: a SYN conforms when the theoretical arrival time, pushed one interval on, is no
// further than the burst tolerance ahead of now. Updates from two CPUs at once may both
// pass; the bucket is approximate by at most the number of CPUs, which is fine here.
static __always_inline int rate_ok(__u8 key[16], __u64 now)
{
	__u32 zero = 0;
	struct rate_config *cfg = bpf_map_lookup_elem(&bw_config, &zero);
	if (!cfg || cfg->interval_ns == 0)
		return 1;
	struct source_entry *s = bpf_map_lookup_elem(&bw_sources, key);
	if (!s) {
		struct source_entry fresh = { .tat = now + cfg->interval_ns, .passed = 1,
					      .last_seen_ns = now };
		bpf_map_update_elem(&bw_sources, key, &fresh, BPF_ANY);
		return 1;
	}
	s->last_seen_ns = now;
	__u64 tat = s->tat > now ? s->tat : now;
	__u64 next = tat + cfg->interval_ns;
	if (next - now > cfg->burst_ns) {
		__sync_fetch_and_add(&s->dropped, 1);
		return 0;
	}
	s->tat = next;
	__sync_fetch_and_add(&s->passed, 1);
	return 1;
}

static __always_inline int syn_to_watched_port(struct tcphdr *tcp)
{
	if (!tcp->syn || tcp->ack)
		return 0;
	__u16 port = bpf_ntohs(tcp->dest);
	return bpf_map_lookup_elem(&bw_ports, &port) != NULL;
}

// The verdict for a SYN from a source that is `allowed` or else looked up in `block_map`
// under `lpm` (its LPM key) and rate-limited under `key` (the source as 16 bytes).
static __always_inline int verdict(void *allow_map, void *block_map, void *lpm, __u8 key[16])
{
	if (bpf_map_lookup_elem(allow_map, lpm)) {
		count(C_PASS_ALLOW);
		return XDP_PASS;
	}
	__u64 now = bpf_ktime_get_ns();
	if (blocked(bpf_map_lookup_elem(block_map, lpm), now)) {
		count(C_DROP_BLOCK);
		return XDP_DROP;
	}
	if (!rate_ok(key, now)) {
		count(C_DROP_RATE);
		return XDP_DROP;
	}
	count(C_PASS_RATE);
	return XDP_PASS;
}

static __always_inline int decide_v4(struct iphdr *ip, void *end)
{
	if (ip->protocol != IPPROTO_TCP || ip->ihl < 5)
		return XDP_PASS;
	// A non-first fragment carries no TCP header: whatever its bytes say, it is no SYN.
	if (ip->frag_off & bpf_htons(0x1fff))
		return XDP_PASS;
	struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > end || !syn_to_watched_port(tcp))
		return XDP_PASS;
	count(C_SEEN);
	struct lpm_v4 lpm = { .prefixlen = 32 };
	__builtin_memcpy(lpm.addr, &ip->saddr, 4);
	__u8 key[16] = { 0 };
	key[10] = 0xff;
	key[11] = 0xff;
	__builtin_memcpy(&key[12], &ip->saddr, 4);
	return verdict(&bw_allow4, &bw_block4, &lpm, key);
}

// The TCP header behind the IPv6 header and at most IPV6_EXT_MAX extension headers, or NULL
// (another protocol, a deeper chain, a non-first fragment, a header cut short).
static __always_inline struct tcphdr *ipv6_tcp(struct ipv6hdr *ip, void *end)
{
	__u8 next = ip->nexthdr;
	void *pos = ip + 1;
#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		if (next == IPPROTO_TCP)
			break;
		struct ext_hdr *h = pos;
		if ((void *)(h + 1) > end)
			return NULL;
		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			next = h->nexthdr;
			pos += (h->hdrlen + 1) * 8;
			break;
		case IPPROTO_AH:
			next = h->nexthdr;
			pos += (h->hdrlen + 2) * 4;
			break;
		case IPPROTO_FRAGMENT: {
			struct frag_hdr *f = pos;
			if ((void *)(f + 1) > end || (f->frag_off & bpf_htons(0xfff8)))
				return NULL;
			next = f->nexthdr;
			pos = f + 1;
			break;
		}
		default:
			return NULL;
		}
	}
	struct tcphdr *tcp = pos;
	if (next != IPPROTO_TCP || (void *)(tcp + 1) > end)
		return NULL;
	return tcp;
}

static __always_inline int decide_v6(struct ipv6hdr *ip, void *end)
{
	struct tcphdr *tcp = ipv6_tcp(ip, end);
	if (!tcp || !syn_to_watched_port(tcp))
		return XDP_PASS;
	count(C_SEEN);
	struct lpm_v6 lpm = { .prefixlen = 128 };
	__builtin_memcpy(lpm.addr, &ip->saddr, 16);
	__u8 key[16] = { 0 };
	__builtin_memcpy(key, &ip->saddr, 8);
	return verdict(&bw_allow6, &bw_block6, &lpm, key);
}

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

SEC("xdp")
int bulwark_flow(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (!is_vlan(proto))
			break;
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > end)
			return XDP_PASS;
		proto = vlan->encapsulated_proto;
		l3 = vlan + 1;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		return decide_v4(ip, end);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		return decide_v6(ip, end);
	}
	return XDP_PASS;
}
