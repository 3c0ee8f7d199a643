import path from 'node:path';
import { defineConfig } from 'vitest/config';

const shared = process.env.LAYERFOLD_SHARED ?? path.resolve(__dirname, '..', 'shared');

export default defineConfig({
  test: {
    include: ['test/**/*.spec.ts'],
    testTimeout: 120_000,
    // The native addon already uses both cores; specs run one file at a time.
    fileParallelism: false,
    // The evaluation sets of this repo's tests (README, "Material that is not in the repository").
    env: { LAYERFOLD_DATA: process.env.LAYERFOLD_DATA ?? path.join(shared, 'data', 'eval') },
  },
});
