# The worker on the official Node 24 image, as a non-root user.
FROM node:24-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
USER node
# node itself, not `npm start`: npm does not pass SIGTERM on, and the worker
# drains its in-flight messages on SIGTERM.
CMD ["node", "src/main.ts"]
