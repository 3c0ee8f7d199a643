import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';

import { repoRoot } from './fixtures';

// The generated binding is committed; this catches an unintended change of the native API
// (napi-rs snapshots its typegen the same way). Update with `vitest -u` when the change is meant.
it('the generated index.d.ts is unchanged', async () => {
  await expect(fs.readFileSync(path.join(repoRoot, 'index.d.ts'), 'utf8')).toMatchFileSnapshot('__snapshots__/index.d.ts.snap');
});
