import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.spec.ts'],
    testTimeout: 120_000,
    // The native addon already uses both cores; specs run one file at a time.
    fileParallelism: false,
  },
});
