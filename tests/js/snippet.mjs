// The model card's JavaScript snippet, unchanged but for base URL, key and values.
// Usage: node snippet.mjs <baseURL> <apiKey> <model> <stream: true|false>
import OpenAI from 'openai';

const [baseURL, apiKey, model, streamArg] = process.argv.slice(2);
const stream = streamArg === 'true';

const openai = new OpenAI({
apiKey: apiKey,
baseURL: baseURL,
})

async function main() {
const completion = await openai.chat.completions.create({
model: model,
messages: [{"role":"user","content":"Write a limerick about the wonders of GPU computing."}],
temperature: 0.5,
top_p: 1,
max_tokens: 16,
stream: stream,
})

if (stream) {
  for await (const chunk of completion) {
    process.stdout.write(chunk.choices[0]?.delta?.content || '');
  }
} else {
  process.stdout.write(completion.choices[0]?.message?.content);
}

}

main();
