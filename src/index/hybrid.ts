/**
 * Cache hits of hybrid attention models, as vLLM computes them
 * (vllm/v1/core/kv_cache_coordinator.py HybridKVCacheCoordinator.find_longest_cache_hit,
 * single_type_kv_cache_manager.py FullAttentionManager / SlidingWindowManager.find_longest_cache_hit):
 * each KV cache group bounds the hit in turn until no group shortens it, and the
 * hit stays a multiple of every group's block size.
 */
export interface GroupView {
  /** Full attention needs every block of the prefix; a sliding window only the blocks its window reaches. */
  kind: 'full' | 'sliding';
  blockSize: number;
  /** Sliding window in tokens (kind 'sliding'). */
  window: number;
  /** Whether the group holds block i of the prompt (in its own block size). */
  held(i: number): boolean;
}

/** Blocks a sliding window needs before the first uncached token: ceil((window - 1) / block size). */
export function windowBlocks(window: number, blockSize: number): number {
  return Math.ceil((window - 1) / blockSize);
}

/** Tokens of the group's hit within the first maxTokens tokens. */
export function groupHit(g: GroupView, maxTokens: number): number {
  const nb = Math.floor(maxTokens / g.blockSize);
  if (g.kind === 'full') {
    let i = 0;
    while (i < nb && g.held(i)) i++;
    return i * g.blockSize;
  }
  const need = windowBlocks(g.window, g.blockSize);
  // From the right: the first run of `need` held blocks ends the hit.
  let run = 0;
  for (let i = nb - 1; i >= 0; i--) {
    if (!g.held(i)) {
      run = 0;
      continue;
    }
    if (++run >= need) return (i + run) * g.blockSize;
  }
  // No full window anywhere: the leading held blocks still count.
  return run * g.blockSize;
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** The hybrid hit: full-attention groups first, then the others, repeated until it settles. */
export function hybridHit(groups: GroupView[], maxTokens: number): number {
  if (groups.length === 0) return 0;
  let lcm = 1;
  for (const g of groups) lcm = (lcm / gcd(lcm, g.blockSize)) * g.blockSize;
  const ordered = [...groups.filter((g) => g.kind === 'full'), ...groups.filter((g) => g.kind !== 'full')];
  let hit = Math.floor(maxTokens / lcm) * lcm;
  for (;;) {
    const before = hit;
    for (const g of ordered) hit = Math.floor(groupHit(g, hit) / lcm) * lcm;
    if (hit === before || hit === 0) return hit;
  }
}
