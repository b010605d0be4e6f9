// The built-in script `hako demo` and `hako up` play when no real model is configured (and no
// HAKO_MODEL_SCRIPT is given): the agent writes a small Python program into its workspace, runs
// it, and reports the output. One turn per model request, in the scripted model's format.
import type { ScriptInput } from './scripted-model-script.js';

/** The prompt the demo sends; with the real model it asks for what the script plays. */
export const DEMO_PROMPT =
  'Write a Python program fib.py that prints the first 10 Fibonacci numbers on one line, ' +
  'separated by spaces, run it with python3, and tell me what it printed.';

/** The file the demo's agent writes, relative to the workspace. */
export const DEMO_FILE = 'fib.py';

/** What running DEMO_FILE prints. */
export const DEMO_OUTPUT = '0 1 1 2 3 5 8 13 21 34';

/** The program the scripted agent writes. */
export const DEMO_PROGRAM = `def fib(n):
    """The first n Fibonacci numbers."""
    out, a, b = [], 0, 1
    for _ in range(n):
        out.append(a)
        a, b = b, a + b
    return out


print(" ".join(str(x) for x in fib(10)))
`;

/** The final answer of the scripted agent. */
export const DEMO_ANSWER = `fib.py prints the first 10 Fibonacci numbers: ${DEMO_OUTPUT}`;

/** Write fib.py, run it, answer: three model turns. */
export const DEMO_SCRIPT: ScriptInput = {
  turns: [
    {
      text: "I'll write the program to fib.py.",
      tool: 'Write',
      input: { file_path: `/workspace/${DEMO_FILE}`, content: DEMO_PROGRAM },
    },
    {
      text: 'Now I run it.',
      tool: 'Bash',
      input: { command: `python3 ${DEMO_FILE}`, description: 'Run the Fibonacci program' },
    },
    { text: DEMO_ANSWER },
  ],
  final: DEMO_ANSWER,
  aux: 'Fibonacci in Python',
};
