import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'dist-harness/**',
      'node_modules/**',
      'coverage/**',
      'charts/**',
      '**/*.js',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      'no-console': ['error', { allow: ['error'] }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    files: [
      'test/**/*.ts',
      'tools/**/*.ts',
      'harness/bench/**/*.ts',
      'harness/cli.ts',
      'src/cli.ts',
    ],
    rules: { 'no-console': 'off' },
  },
);
